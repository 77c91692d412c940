"""A TCP relay on 127.0.0.1 that counts what the API server sends through it.

Webhook calls are TLS from kube-apiserver to the operator, so a test can't read them,
but it can see that they happen: put a :class:`Relay` between the webhook Service's
endpoint and an operator replica and count the bytes that flow towards the replica
(kube-apiserver keeps connections alive, so connections alone undercount requests).
With no target it is a tripwire: it accepts, counts the connection and hangs up, so
anything sent there fails, and the count says whether anything was sent at all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from .controlplane import free_port

IO_TIMEOUT = 30.0  # a stuck pump gives up; webhook calls last under a second


@dataclass
class Relay:
    target_port: int | None
    port: int = field(default_factory=free_port)
    connections: int = 0
    bytes_in: int = 0  # from the API server towards the target
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _open: list[socket.socket] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Relay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(timeout=5)

    def sent(self) -> int:
        """Bytes the API server has sent through so far."""
        with self._lock:
            return self.bytes_in

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            if self.target_port is None:  # tripwire: hang up
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            for s in (client, upstream):
                s.settimeout(IO_TIMEOUT)
            with self._lock:
                self._open += [client, upstream]
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if counted:
                    with self._lock:
                        self.bytes_in += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
