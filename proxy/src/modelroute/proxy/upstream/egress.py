"""Egress through an HTTP forward proxy: which connections take one, and the CONNECT tunnel.

Many clusters reach the internet only through a proxy.  The sidecar follows
the conventions every HTTP tool does:

* ``HTTPS_PROXY`` carries connections to ``https://`` providers, ``HTTP_PROXY``
  those to ``http://`` ones (the lower-case spellings win when both are set,
  as curl and Python's urllib do);
* ``NO_PROXY`` lists hosts that are reached directly: ``*`` (everything),
  a host name (``example.com`` also covers ``api.example.com``; a leading dot
  is the same), an IP address or a CIDR block (``10.0.0.0/8``), each
  optionally with ``:port``.  Nothing is exempt implicitly – a cluster's
  ``NO_PROXY`` normally lists ``localhost,127.0.0.1,.svc,.cluster.local``;
* a ``ModelProvider`` may override the environment for its endpoints
  (``spec.egress.proxy``: a proxy URL, or ``direct``).

For an ``https://`` provider the sidecar opens a tunnel (``CONNECT
host:port``) and speaks TLS to the provider through it, so the proxy sees
only the host name; for an ``http://`` provider it sends the request to the
proxy in absolute form.  Proxy credentials come from the URL's user info
(``http://user:password@proxy:3128``, percent-encoded as usual) or, for a
provider's own proxy, from a Secret; they travel only in
``Proxy-Authorization`` and are never part of a message, a log line or
``repr``.  Proxies are spoken to in plain HTTP: a proxy URL with ``https://``
(TLS to the proxy itself) is refused with that reason.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

MAX_CONNECT_ANSWER = 16 * 1024  # a proxy's answer to CONNECT: a status line and a few headers

DIRECT = "direct"


class EgressConfigError(ValueError):
    """A proxy setting that can't be used (names the variable or field and what to fix)."""


@dataclass(frozen=True, slots=True)
class ForwardProxy:
    """One forward proxy: where it listens and, when it wants them, the credentials it takes."""

    host: str
    port: int
    # the value of Proxy-Authorization (read when a connection is made, so a rotated Secret
    # is picked up); excluded from repr and comparisons: it must never reach a log line
    authorization: Callable[[], str | None] = field(default=lambda: None, repr=False, compare=False)

    @property
    def shown(self) -> str:
        """The proxy as messages name it: no credentials, ever."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def basic_authorization(userinfo: str) -> str:
    """``Proxy-Authorization`` for ``user:password`` (already percent-decoded)."""
    return "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")


def parse_proxy_url(value: str, where: str) -> ForwardProxy:
    """A proxy URL as the environment or a resource gives it; ``where`` names it in errors.

    ``host:port`` without a scheme is taken as ``http://`` (as curl does).
    """
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise EgressConfigError(f"{where}: not a proxy URL ({exc})") from None
    if parts.scheme != "http":
        raise EgressConfigError(
            f"{where}: proxy scheme {parts.scheme!r} is not supported; the sidecar speaks "
            "plain HTTP to the proxy (https:// providers are still tunnelled with TLS "
            "end to end): use http://host:port"
        )
    if not parts.hostname:
        raise EgressConfigError(f"{where}: the proxy URL names no host")
    auth: str | None = None
    if parts.username is not None:
        auth = basic_authorization(unquote(parts.username) + ":" + unquote(parts.password or ""))
    return ForwardProxy(parts.hostname, port or 80, authorization=lambda: auth)


@dataclass(frozen=True, slots=True)
class _Exempt:
    """One ``NO_PROXY`` entry."""

    host: str | None = None  # a host-name suffix
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def covers(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        assert self.host is not None
        return host == self.host or host.endswith("." + self.host)


def parse_no_proxy(value: str) -> tuple[bool, tuple[_Exempt, ...]]:
    """(everything exempt?, the entries) of a ``NO_PROXY`` value; unreadable entries are skipped."""
    entries: list[_Exempt] = []
    for raw in value.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "*":
            return True, ()
        port: int | None = None
        host = item
        if host.startswith("["):  # [v6]:port
            inside, _, rest = host[1:].partition("]")
            host = inside
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif host.count(":") == 1:
            name, _, digits = host.partition(":")
            if digits.isdigit():
                host, port = name, int(digits)
        try:
            entries.append(_Exempt(network=ipaddress.ip_network(host, strict=False), port=port))
            continue
        except ValueError:
            pass
        entries.append(_Exempt(host=host.lstrip(".").removeprefix("*."), port=port))
    return False, tuple(entries)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which proxy carries a connection to a provider's host, if any.

    ``override`` is a provider's ``spec.egress.proxy``: a proxy, or ``None``
    with ``direct=True`` for "never a proxy"; without one, the environment's
    variables decide.
    """

    https_proxy: ForwardProxy | None = None
    http_proxy: ForwardProxy | None = None
    no_proxy_all: bool = False
    no_proxy: tuple[_Exempt, ...] = ()
    override: ForwardProxy | None = None
    direct: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EgressPolicy:
        """The environment's proxy settings; raises :class:`EgressConfigError` naming a bad one."""

        def read(name: str) -> tuple[str, str] | None:
            for spelling in (name.lower(), name.upper()):
                value = environ.get(spelling, "").strip()
                if value:
                    return spelling, value
            return None

        proxies: dict[str, ForwardProxy | None] = {}
        for name in ("HTTPS_PROXY", "HTTP_PROXY"):
            found = read(name)
            proxies[name] = parse_proxy_url(found[1], found[0]) if found else None
        no_proxy = read("NO_PROXY")
        everything, entries = parse_no_proxy(no_proxy[1]) if no_proxy else (False, ())
        return cls(proxies["HTTPS_PROXY"], proxies["HTTP_PROXY"], everything, entries)

    def for_provider(self, override: ForwardProxy | None, direct: bool) -> EgressPolicy:
        """This policy with a provider's own setting on top (``spec.egress``)."""
        if override is None and not direct:
            return self
        return EgressPolicy(
            self.https_proxy, self.http_proxy, self.no_proxy_all, self.no_proxy, override, direct
        )

    def proxy_for(self, host: str, port: int, tls: bool) -> ForwardProxy | None:
        """The proxy for a connection to ``host:port``, or None to connect directly."""
        if self.direct:
            return None
        if self.override is not None:
            return self.override
        chosen = self.https_proxy if tls else self.http_proxy
        if chosen is None or self.no_proxy_all:
            return None
        host = host.lower().rstrip(".")
        if any(entry.covers(host, port) for entry in self.no_proxy):
            return None
        return chosen


NO_EGRESS = EgressPolicy()


class TunnelRefused(OSError):
    """The proxy answered CONNECT with something other than 2xx (the message says what)."""


async def open_tunnel(sock: socket.socket, proxy: ForwardProxy, host: str, port: int) -> None:
    """Ask ``proxy`` (connected on ``sock``) for a tunnel to ``host:port``; raise if refused.

    Runs on the loop's socket primitives (``sock_sendall``/``sock_recv``), so TLS
    is then started over the same socket by ``create_connection(sock=...)``.
    """
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    auth = proxy.authorization()
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise TunnelRefused(
                f"the proxy closed the connection instead of answering CONNECT {authority}"
            )
        answer += chunk
        if len(answer) > MAX_CONNECT_ANSWER:
            raise TunnelRefused("the proxy sent an over-long answer to CONNECT")
    head, _, extra = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise TunnelRefused(f"the proxy answered CONNECT with {status_line[:80]!r}")
    status = int(parts[1])
    if not 200 <= status < 300:
        hint = (
            " (check the proxy credentials: the URL's user:password or spec.egress.proxyCredentials)"
            if status in (401, 407)  # 407 is the standard; some proxies (tinyproxy) say 401
            else ""
        )
        raise TunnelRefused(f"the proxy refused CONNECT {authority}: {status_line[9:80]}{hint}")
    if extra:  # the provider speaks only after our TLS hello: bytes now are not a tunnel
        raise TunnelRefused("the proxy sent data before the tunnel was used")
