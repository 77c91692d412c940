"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager.

Built from Go modules by ``scripts/install-test-tools.sh`` (``.tools/bin``); started once
per test run by the ``control_plane`` fixture (``tests/conftest.py``) and stopped at the end.
No kubelet and no scheduler: Pods are stored objects (admission, defaulting and
validation all happen), nothing runs them.  What the tests run is local processes.

What is set up, and why:

* TLS everywhere, certificates made at start with the ``openssl`` CLI (EC P-256: fast to
  generate).  The admin identity is a client certificate in ``system:masters``; the
  controller-manager has its own (``system:kube-controller-manager``) and runs each
  controller with its own ServiceAccount credentials, as kubeadm sets it up.
* ``--authorization-mode=RBAC``: every other identity gets exactly what RBAC grants.
* A ServiceAccount issuer and signing key, so TokenRequest works (:meth:`ControlPlane.token`):
  the operator and the sidecars run with real ServiceAccount tokens.
* ``--enable-aggregator-routing``: webhook ``clientConfig.service`` is resolved through the
  Service's EndpointSlices, not its ClusterIP (nothing would answer there).
  :meth:`ControlPlane.route_service` points a Service at a port on 127.0.0.1.  Endpoint
  validation refuses loopback IPs, so the slice is of ``addressType: FQDN`` with the
  address ``127.0.0.1`` (a valid domain name of four labels; Go dials it as an IP).
  The endpoints controllers are not run: with no pods running they would only say
  "no endpoints".
* The controller-manager runs the controllers the project depends on: namespace
  deletion, garbage collection, ServiceAccounts and their tokens, the root CA ConfigMap.

Fixture API (for any suite): ``url``, ``ca_file``, ``admin_kubeconfig``,
:meth:`kubectl`, :meth:`api` (admin JSON client), :meth:`token`,
:meth:`kubeconfig_for` (a kubeconfig holding a ServiceAccount token),
:meth:`route_service`, :meth:`stop_apiserver` / :meth:`start_apiserver`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 60.0
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not start (binary missing, port taken, component died)."""


def find_binary(name: str) -> Path | None:
    """``.tools/bin`` first (the pinned build), then ``PATH``."""
    local = TOOLS_BIN / name
    if local.exists():
        return local
    found = shutil.which(name)
    return Path(found) if found else None


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if find_binary(b) is None]


def end_process(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    """Stop a test's child process: terminate (or kill), then kill if it won't go in 15 s."""
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def log_tail(log: Path, lines: int) -> str:
    """The last lines of a child's log, for an assertion message; empty if there is none."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class Pki:
    """A CA and the leaf certificates the components and the admin use."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_crt, self.ca_key = directory / "ca.crt", directory / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", "/CN=modelroute-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(self.ca_key), "-out", str(self.ca_crt),
        )  # fmt: skip
        # The ServiceAccount token signing key pair (ES256).
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.sa_key))
        _openssl("ec", "-in", str(self.sa_key), "-pubout", "-out", str(self.sa_pub))

    def leaf(self, name: str, subject: str, server: bool = False) -> tuple[Path, Path]:
        crt, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        ext = ["-addext", "basicConstraints=critical,CA:FALSE"]
        if server:
            sans = "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc"
            ext += ["-addext", f"subjectAltName={sans}", "-addext", "extendedKeyUsage=serverAuth"]
        else:
            ext += ["-addext", "extendedKeyUsage=clientAuth"]
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", subject, "-CA", str(self.ca_crt), "-CAkey", str(self.ca_key),
            *ext, "-keyout", str(key), "-out", str(crt),
        )  # fmt: skip
        return crt, key


def kubeconfig(
    path: Path,
    server: str,
    ca_file: Path,
    *,
    token: str | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    namespace: str | None = None,
) -> Path:
    user: dict[str, str] = {}
    if token:
        user["token"] = token
    if cert and key:
        user["client-certificate"], user["client-key"] = str(cert), str(key)
    context: dict[str, str] = {"cluster": "test", "user": "test"}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": context}],
    }
    path.write_text(json.dumps(doc, indent=1))  # JSON is YAML; no dependency needed
    path.chmod(0o600)
    return path


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        end_process(self.proc)
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)


@dataclass
class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; see the module docstring."""

    workdir: Path
    components: dict[str, Component] = field(default_factory=dict)
    started_seconds: float = 0.0

    def start(self) -> ControlPlane:
        missing = missing_binaries()
        if missing:
            raise ControlPlaneError(
                f"missing {', '.join(missing)}: run `bash scripts/install-test-tools.sh`"
            )
        began = time.monotonic()
        self.pki = Pki(self.workdir / "pki")
        self.serving = self.pki.leaf("apiserver", "/CN=kube-apiserver", server=True)
        self.admin_cert = self.pki.leaf("admin", "/O=system:masters/CN=modelroute-test-admin")
        kcm_cert = self.pki.leaf("kcm", "/CN=system:kube-controller-manager")
        self.ca_file = self.pki.ca_crt
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.admin_kubeconfig = kubeconfig(
            self.workdir / "admin.kubeconfig",
            self.url,
            self.ca_file,
            cert=self.admin_cert[0],
            key=self.admin_cert[1],
        )
        kcm_kubeconfig = kubeconfig(
            self.workdir / "kcm.kubeconfig",
            self.url,
            self.ca_file,
            cert=kcm_cert[0],
            key=kcm_cert[1],
        )
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        etcd_port, etcd_peer = free_port(), free_port()
        self.components["etcd"] = Component(
            "etcd",
            [
                str(find_binary("etcd")),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=test=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # a throw-away store: durability buys nothing here
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        self.components["kube-apiserver"] = Component(
            "kube-apiserver",
            [
                str(find_binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.serving[0]}",
                f"--tls-private-key-file={self.serving[1]}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={self.pki.sa_pub}",
                f"--service-account-signing-key-file={self.pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--enable-aggregator-routing=true",
                # the `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints refuse
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--v=1",
            ],
            logs / "kube-apiserver.log",
        )
        self.components["kube-controller-manager"] = Component(
            "kube-controller-manager",
            [
                str(find_binary("kube-controller-manager")),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.ca_file}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                # namespace deletion and GC react within a second or two, not after a resync
                "--namespace-sync-period=10s",
                "--v=1",
            ],
            logs / "kube-controller-manager.log",
        )
        try:
            self.components["etcd"].start()
            self.start_apiserver()
            self.components["kube-controller-manager"].start()
            # ServiceAccount controller up: every namespace gets its `default` SA, which
            # pod admission requires.
            self._wait(
                lambda: (
                    self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
                    is not None
                ),
                "the controller-manager to create ServiceAccount default/default",
            )
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - began
        return self

    # ---- lifecycle ------------------------------------------------------------

    def start_apiserver(self) -> None:
        self.components["kube-apiserver"].start()
        self._wait(self._ready, "kube-apiserver /readyz")

    def stop_apiserver(self) -> None:
        self.components["kube-apiserver"].stop()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()

    def _ready(self) -> bool:
        try:
            with self._open("GET", "/readyz", None, None, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait(self, probe: Any, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for c in self.components.values():
                if c.proc is not None and not c.alive():
                    raise ControlPlaneError(
                        f"{c.name} exited while waiting for {what}:\n{c.tail()}"
                    )
            with contextlib.suppress(urllib.error.URLError, OSError, ControlPlaneError):
                if probe():
                    return
            time.sleep(0.1)
        tails = "\n".join(f"--- {c.name}\n{c.tail()}" for c in self.components.values())
        raise ControlPlaneError(f"timed out after {timeout:g}s waiting for {what}\n{tails}")

    # ---- talking to it ----------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.admin_cert[0]), str(self.admin_cert[1]))
        return ctx

    def _open(
        self,
        method: str,
        path: str,
        body: Any,
        content_type: str | None,
        timeout: float = 10,
        token: str | None = None,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type or "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
        else:
            ctx = self.ssl_context()
        return urllib.request.urlopen(req, context=ctx, timeout=timeout)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any] | None:
        """One JSON request (admin, or as ``token``); None on 404, :class:`ApiStatus` on error."""
        try:
            with self._open(method, path, body, content_type, token=token) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ApiStatus(exc.code, exc.read().decode(errors="replace")) from exc
        doc: dict[str, Any] = json.loads(raw) if raw else {}
        return doc

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl (admin unless ``kubeconfig``); output captured as text."""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.admin_kubeconfig)}
        proc = subprocess.run(
            [str(find_binary("kubectl")), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def helm(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.admin_kubeconfig),
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }
        proc = subprocess.run(
            [str(find_binary("helm")), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def token(
        self,
        namespace: str,
        serviceaccount: str,
        *,
        audiences: Sequence[str] = (),
        seconds: int = 3600,
        pod: str | None = None,
        pod_uid: str | None = None,
    ) -> str:
        """A TokenRequest token for the ServiceAccount (bound to a Pod when ``pod`` is given)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        if pod:
            spec["boundObjectRef"] = {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": pod,
                "uid": pod_uid,
            }
        doc = self.api(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{serviceaccount}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        if doc is None:
            raise ControlPlaneError(f"no ServiceAccount {namespace}/{serviceaccount}")
        return str(doc["status"]["token"])

    def kubeconfig_for(
        self, namespace: str, serviceaccount: str, path: Path, **token_args: Any
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (default namespace: its own)."""
        tok = self.token(namespace, serviceaccount, **token_args)
        return kubeconfig(path, self.url, self.ca_file, token=tok, namespace=namespace)

    def route_service(
        self,
        namespace: str,
        service: str,
        port: int,
        port_name: str = "https",
        slice_name: str | None = None,
    ) -> None:
        """Make the Service ``namespace/service`` resolve to 127.0.0.1:``port`` for the API server.

        An EndpointSlice of ``addressType: FQDN`` (see the module docstring), labelled
        with the Service name and a manager of our own so no controller claims it.
        Webhook calls verify the serving certificate against ``<service>.<namespace>.svc``.
        A second ``slice_name`` adds a second endpoint (another replica's port): the API
        server picks one of the Service's slices at random for each call.
        """
        name = slice_name or f"{service}-local"
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "modelroute-tests",
                },
            },
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        }
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        current = self.api("GET", f"{path}/{name}")
        if current is None:
            self.api("POST", path, body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.api("PUT", f"{path}/{name}", body)

    def logs(self, component: str, lines: int = 50) -> str:
        return self.components[component].tail(lines)


class ApiStatus(Exception):
    """An error status from the API server, with its Status body."""

    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"{code}: {body[:1000]}")
        self.code = code
        self.body = body
