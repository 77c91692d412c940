"""An injected Pod's sidecar, run as a local process the way a kubelet would run it.

The Pod is a stored object (the real webhook injected it, the real server validated
it).  This takes the ``modelroute-proxy`` container from the stored Pod and runs its own
command, args and environment (``fieldRef`` resolved), authenticated as the Pod's
ServiceAccount with a TokenRequest token bound to the Pod.  What one machine can't share
is rewritten: the listen, admin and explain ports (ephemeral, on 127.0.0.1), the mounted
``--table-file`` and ``--secrets-dir`` (temp paths).  :meth:`SidecarProcess.mark_running`
then does the kubelet's part of the Pod status (phase Running, podIP 127.0.0.1) and points
the ``modelroute.io/admin-port`` annotation at the real admin port, so the operator's
rollout gate finds the sidecar as it would in a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane import ControlPlane, end_process, free_port, kubeconfig, log_tail

MODELROUTE = Path(sys.executable).parent / "modelroute"
SIDECAR = "modelroute-proxy"
CHAT = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class SidecarProcess:
    cp: ControlPlane
    namespace: str
    pod: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        stored = self.cp.api("GET", f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}")
        assert stored is not None, f"no Pod {self.namespace}/{self.pod}"
        self.uid = stored["metadata"]["uid"]
        spec = stored["spec"]
        containers = (spec.get("initContainers") or []) + spec["containers"]
        container = next((c for c in containers if c["name"] == SIDECAR), None)
        assert container is not None, f"no {SIDECAR} container injected into {self.pod}"
        self.proxy_port, self.admin_port = free_port(), free_port()
        self.explain_port = free_port()
        argv = container["command"] + (container.get("args") or [])
        assert argv[0] == "modelroute", argv
        rewritten: list[str] = [str(MODELROUTE)]
        args = iter(argv[1:])
        for arg in args:
            flag, eq, value = arg.partition("=")
            if not eq and flag in (
                "--listen",
                "--admin",
                "--explain",
                "--table-file",
                "--secrets-dir",
            ):
                value = next(args)
            if flag == "--listen":
                arg = f"--listen=127.0.0.1:{self.proxy_port}"
            elif flag == "--admin":
                arg = f"--admin=127.0.0.1:{self.admin_port}"
            elif flag == "--explain":  # several sidecars share this machine's loopback
                arg = f"--explain=127.0.0.1:{self.explain_port}"
            elif flag == "--table-file":
                arg = f"--table-file={self.workdir / 'table' / Path(value).name}"
            elif flag == "--secrets-dir":
                arg = f"--secrets-dir={self.workdir / 'secrets'}"
            rewritten.append(arg)
        self.argv = rewritten
        sa = spec.get("serviceAccountName") or "default"
        token = self.cp.token(self.namespace, sa, pod=self.pod, pod_uid=self.uid)
        self.kubeconfig = kubeconfig(
            self.workdir / "kubeconfig", self.cp.url, self.cp.ca_file, token=token
        )
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "MODELROUTE", "OTEL"))
        }
        for var in container.get("env") or []:
            self.env[var["name"]] = self._env_value(var, stored)
        self.env["KUBECONFIG"] = str(self.kubeconfig)
        self.log = self.workdir / "sidecar.log"

    @staticmethod
    def _env_value(var: dict[str, Any], pod: dict[str, Any]) -> str:
        if "valueFrom" not in var:
            return str(var.get("value", ""))
        field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.namespace":
            return str(pod["metadata"]["namespace"])
        if field == "metadata.name":
            return str(pod["metadata"]["name"])
        raise AssertionError(f"the test launcher can't resolve env {var}")

    def start(self, timeout: float = 20) -> SidecarProcess:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._get("/healthz") is not None:
                return self
            time.sleep(0.1)
        tail = self.tail()
        self.stop()
        raise AssertionError(f"sidecar {self.namespace}/{self.pod} did not start:\n{tail}")

    def mark_running(self) -> None:
        """The kubelet's share: the Pod runs on 127.0.0.1, its admin port is where we put it."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}"
        merge = "application/merge-patch+json"
        self.cp.api(
            "PATCH",
            path,
            {"metadata": {"annotations": {"modelroute.io/admin-port": str(self.admin_port)}}},
            content_type=merge,
        )
        self.cp.api(
            "PATCH",
            f"{path}/status",
            {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}},
            content_type=merge,
        )

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}{path}", timeout=2
            ) as r:
                body = r.read()
                return json.loads(body) if body.startswith(b"{") else {}
        except (OSError, ValueError):
            return None

    def status(self) -> dict[str, Any]:
        doc = self._get("/status")
        assert doc is not None, f"no /status from the sidecar:\n{self.tail()}"
        return doc

    def served_by(self) -> str | None:
        """The target that served one chat request for ``general`` (None: it failed)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.proxy_port}/v1/chat/completions",
            json.dumps(CHAT).encode(),
            {"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
                return resp.headers.get("x-modelroute-target")
        except (urllib.error.HTTPError, OSError):
            return None

    def stop(self) -> None:
        if self.proc is None:
            return
        end_process(self.proc)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)
