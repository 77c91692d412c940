"""A network namespace of the test's own, and nftables rules in it that make a region sick.

Killing a fake provider only ever *refuses*: the kernel answers a dead port
with a reset at once.  What a region outage looks like from a pod is worse –
packets vanish, a connect hangs until its timeout, a connection opened
before the fault goes silent mid-request – and only the kernel can do that.
So this suite runs the fakes, the proxy and the load inside a namespace of
its own (``ip netns add``; its loopback is its whole network: nothing leaves
the machine, nothing else on the machine is disturbed) and drops packets with
nftables there:

* ``blackhole(port)`` – every TCP segment to or from the port is dropped (the
  output hook sees both directions on loopback): new connects hang, open
  keep-alive connections go silent;
* ``mute(port)`` – only segments that carry data are dropped: the handshake
  completes (a connect, and so a TCP probe, succeeds) but no request ever
  arrives and no answer comes back – a region that accepts and never answers.

The rules match the ports through two nftables sets, so making a region sick
or healing it is one atomic element add/delete, never a rule reload.

Every namespace made here is deleted – its processes killed first – by
:meth:`NetNS.delete`, by the session finalizer in ``conftest.py`` and, as a
last resort, at interpreter exit; one left behind by a killed run (its name
carries the creating pid) is removed by the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time

PREFIX = "mrk"  # modelroute kernel faults: mrk-<pid>-<n>
TABLE = "mrk_faults"
# a segment no larger than this carries no payload (IPv4 20 + TCP 20..40 with options);
# every HTTP request or answer is larger, so ``mute`` passes handshakes, ACKs and FINs only
BARE_SEGMENT_BYTES = 80

_counter = itertools.count(1)
_live: dict[str, NetNS] = {}


class KernelUnavailable(RuntimeError):
    """This machine (or user) cannot make namespaces or nftables rules: the suite can't run."""


def _run(argv: list[str], timeout: float = 10.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


def tool(name: str) -> str:
    """``name``'s path: on PATH, else in the sbin directories a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def missing_capability() -> str | None:
    """Why the kernel fault suite cannot run here, or None when it can (root, ip, nft)."""
    if os.geteuid() != 0:
        return "the kernel fault suite needs root (ip netns add, nft)"
    for name, package in (("ip", "iproute2"), ("nft", "nftables")):
        if not os.path.isabs(tool(name)):
            return (
                f"missing `{tool}` (Debian's {package}): run `bash scripts/install-test-tools.sh`"
            )
    return None


class NetNS:
    """One namespace with ``lo`` up and the fault table in place; made by :meth:`create`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.deleted = False

    @classmethod
    def create(cls) -> NetNS:
        """A fresh, uniquely named namespace; raises :class:`KernelUnavailable` if the kernel refuses."""
        _reap_orphans()
        ns = cls(f"{PREFIX}-{os.getpid()}-{next(_counter)}")
        try:
            _run([tool("ip"), "netns", "add", ns.name])
        except (subprocess.CalledProcessError, OSError) as exc:
            raise KernelUnavailable(f"ip netns add failed: {_why(exc)}") from exc
        _live[ns.name] = ns
        try:
            _run([tool("ip"), "-n", ns.name, "link", "set", "lo", "up"])
            ns.nft(
                f"add table inet {TABLE}\n"
                f"add set inet {TABLE} dark {{ type inet_service; }}\n"
                f"add set inet {TABLE} mute {{ type inet_service; }}\n"
                f"add chain inet {TABLE} out {{ type filter hook output priority 0; }}\n"
                f"add rule inet {TABLE} out tcp dport @dark drop\n"
                f"add rule inet {TABLE} out tcp sport @dark drop\n"
                f"add rule inet {TABLE} out tcp dport @mute ip length > {BARE_SEGMENT_BYTES} drop\n"
                f"add rule inet {TABLE} out tcp sport @mute ip length > {BARE_SEGMENT_BYTES} drop\n"
            )
        except (subprocess.CalledProcessError, OSError) as exc:
            ns.delete()
            raise KernelUnavailable(f"nftables in {ns.name} failed: {_why(exc)}") from exc
        return ns

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside the namespace."""
        return [tool("ip"), "netns", "exec", self.name, *command]

    def nft(self, script: str) -> None:
        """Apply an nft script (one transaction: all of it or none) inside the namespace."""
        done = subprocess.run(
            self.argv(tool("nft"), "-f", "-"),
            input=script,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, ["nft", "-f", "-"], "", done.stderr
            )

    # -- faults -----------------------------------------------------------------------------

    def blackhole(self, *ports: int) -> float:
        """Drop every segment to and from ``ports``; returns when that began (monotonic).

        The moment returned is taken just before the rule goes in, so every
        window measured from it is, if anything, a few milliseconds too long.
        """
        return self._elements("add", "dark", ports)

    def heal(self, *ports: int) -> float:
        """Undo :meth:`blackhole` and :meth:`mute` for ``ports``; returns when that began."""
        sick = self.sick_ports()
        script = "".join(
            f"delete element inet {TABLE} {name} {{ {port} }}\n"
            for port in ports
            for name, in_set in sick.items()
            if port in in_set
        )
        at = time.monotonic()
        if script:
            self.nft(script)
        return at

    def mute(self, *ports: int) -> float:
        """Let handshakes through but drop every segment with data; returns when that began."""
        return self._elements("add", "mute", ports)

    def sick_ports(self) -> dict[str, set[int]]:
        """What is dark or mute now, from the kernel's own sets (``{"dark": {…}, "mute": {…}}``)."""
        out: dict[str, set[int]] = {}
        for name in ("dark", "mute"):
            text = _run(self.argv(tool("nft"), "list", "set", "inet", TABLE, name))
            inside = text.split("elements = {", 1)[1].split("}", 1)[0] if "elements" in text else ""
            out[name] = {int(p) for p in inside.replace(",", " ").split()}
        return out

    def _elements(self, verb: str, set_name: str, ports: tuple[int, ...]) -> float:
        at = time.monotonic()
        self.nft("".join(f"{verb} element inet {TABLE} {set_name} {{ {p} }}\n" for p in ports))
        return at

    # -- teardown ---------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Processes still running inside the namespace."""
        with contextlib.suppress(subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
            return [int(p) for p in _run([tool("ip"), "netns", "pids", self.name]).split()]
        return []

    def delete(self) -> None:
        """Kill what still runs inside (TERM, then KILL), then delete the namespace; idempotent."""
        if self.deleted:
            return
        for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
            _run([tool("ip"), "netns", "del", self.name])
        self.deleted = True
        _live.pop(self.name, None)


def delete_all() -> None:
    """Delete every namespace this process made and has not deleted yet (the finalizers' call)."""
    for ns in list(_live.values()):
        ns.delete()


def _reap_orphans() -> None:
    """Delete namespaces left by an earlier run of this suite whose process is gone."""
    with contextlib.suppress(subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
        for line in _run([tool("ip"), "netns", "list"]).splitlines():
            name = line.split()[0] if line.strip() else ""
            parts = name.split("-")
            if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid() or _alive(pid):
                continue
            NetNS(name).delete()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return (exc.stderr or exc.stdout or str(exc)).strip()[:300]
    return str(exc)


atexit.register(delete_all)
