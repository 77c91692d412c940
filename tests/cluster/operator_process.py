"""The operator as a local process, configured from the chart's own Deployment.

There is no kubelet, so the Deployment ``helm install`` created never runs.  This
module does what a kubelet would for it: reads the Deployment's container args and
environment (``fieldRef`` resolved), mounts the webhook Secret it names (files in a
temp dir), and gives it the Deployment's ServiceAccount identity through a real
TokenRequest token.  Only what cannot be the same on one machine is rewritten: the
listen addresses (ephemeral ports on 127.0.0.1) and the certificate paths.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane import ControlPlane, end_process, free_port, log_tail

MODELROUTE = Path(sys.executable).parent / "modelroute"


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


# what kopf logs when peering pauses a replica for a higher-priority one, and when it resumes
PEERING_PAUSED = "Pausing operations in favour of"
PEERING_RESUMED = "Resuming operations"


@dataclass
class OperatorProcess:
    cp: ControlPlane
    namespace: str
    deployment: str
    workdir: Path
    priority: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        dep = self.cp.api(
            "GET", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.deployment}"
        )
        assert dep is not None, f"no Deployment {self.namespace}/{self.deployment}"
        pod = dep["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "operator")
        self.serviceaccount = pod.get("serviceAccountName") or "default"
        cert_dir = self._mount_secret(pod, container)
        self.webhook_port = free_port()
        self.liveness_port = free_port()
        self.readiness_port = free_port()
        args = []
        for arg in container.get("args") or []:
            if arg.startswith("--webhook-listen="):
                arg = f"--webhook-listen=127.0.0.1:{self.webhook_port}"
            elif arg.startswith(("--webhook-cert=", "--webhook-key=")):
                flag, _, path = arg.partition("=")
                arg = f"{flag}={cert_dir / Path(path).name}"
            elif arg.startswith("--readiness="):
                arg = f"--readiness=127.0.0.1:{self.readiness_port}"
            elif arg.startswith("--priority="):
                continue
            args.append(arg)
        if not any(a.startswith("--readiness=") for a in args):  # its default binds 0.0.0.0
            args.append(f"--readiness=127.0.0.1:{self.readiness_port}")
        args.append(f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz")
        if self.priority is not None:
            args.append(f"--priority={self.priority}")
        assert container["command"] == ["modelroute"], container["command"]
        self.argv = [str(MODELROUTE), *args]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "MODELROUTE"))}
        for var in container.get("env") or []:
            self.env[var["name"]] = self._env_value(var, dep)
        self.kubeconfig = self.cp.kubeconfig_for(
            self.namespace, self.serviceaccount, self.workdir / "kubeconfig"
        )
        self.env["KUBECONFIG"] = str(self.kubeconfig)
        self.log = self.workdir / "operator.log"

    def _mount_secret(self, pod: dict[str, Any], container: dict[str, Any]) -> Path:
        mount = next(
            m for m in container["volumeMounts"] if m["mountPath"] == "/etc/modelroute/webhook"
        )
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        name = volume["secret"]["secretName"]
        secret = self.cp.api("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        assert secret is not None, f"the chart's webhook Secret {name} is missing"
        out = self.workdir / "webhook-tls"
        out.mkdir(exist_ok=True)
        for key, value in secret["data"].items():
            (out / key).write_bytes(base64.b64decode(value))
        return out

    def _env_value(self, var: dict[str, Any], dep: dict[str, Any]) -> str:
        if "valueFrom" not in var:  # the server drops an empty value: "" is no value
            return str(var.get("value", ""))
        field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.namespace":
            return str(dep["metadata"]["namespace"])
        if field == "metadata.name":
            return f"{self.deployment}-local-{os.getpid()}"
        if field == "spec.serviceAccountName":  # the identity the token below is for
            return self.serviceaccount
        raise AssertionError(f"the test launcher can't resolve env {var}")

    def start(self, timeout: float = 30) -> OperatorProcess:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        out.close()
        if not (
            _wait_port(self.webhook_port, timeout)
            and self._http_ok(self.liveness_port, "/healthz", timeout)
            and self._http_ok(self.readiness_port, "/readyz", timeout)
        ):
            tail = self.tail()
            self.stop()
            raise AssertionError(f"the operator did not come up within {timeout}s:\n{tail}")
        return self

    def _http_ok(self, port: int, path: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{port}{path}"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        end_process(self.proc, kill=kill)
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        return log_tail(self.log, lines)

    # kopf's peering, as this replica's log tells it
    def has_paused(self) -> bool:
        """Has peering paused this replica in favour of another (at any time)?"""
        return PEERING_PAUSED in self.log.read_text(errors="replace")

    def resumed_since_pause(self) -> bool:
        """Did this replica resume after it was last paused?"""
        text = self.log.read_text(errors="replace")
        return text.rfind(PEERING_RESUMED) > text.rfind(PEERING_PAUSED)
