"""Where a provider key may be sent: never to cloud metadata or link-local addresses.

A ModelProvider's ``baseURL`` is where the sidecar sends the namespace's key,
from the app pod's network identity.  Pointed at ``169.254.169.254`` it makes
the sidecar a request forger for the node's cloud credentials; pointed at the
cluster's own API it hands a Secret's value to whoever reads that server's logs.
So these are refused by default, by the model (``modelroute validate`` and the
validating webhook: literal addresses and the well-known names) and by the
sidecar when it connects (``forbidden_address`` on what the name resolved to).

A cluster admin can also restrict provider hosts per namespace with the
annotation ``modelroute.io/allowed-provider-hosts`` (comma-separated host names,
``*.suffix`` wildcards and CIDRs); the webhook refuses providers outside it and
the injector hands the list to the sidecar, which refuses to connect elsewhere.
Loopback and private addresses stay allowed: local fakes and in-cluster
gateways live there.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

ALLOWED_HOSTS_ANNOTATION = "modelroute.io/allowed-provider-hosts"
ALLOWED_HOSTS_ENV = "MODELROUTE_ALLOWED_PROVIDER_HOSTS"

_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("100.100.100.200", "fd00:ec2::254", "fd00:ec2::23", "192.0.0.192")
)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, in any spelling a resolver accepts (``0xa9fea9fe``, ``2852039166``)."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        try:  # inet_aton's legacy forms: one number, hex, octal, a.b
            addr = ipaddress.ip_address(socket.inet_aton(bare))
        except OSError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def forbidden_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr in _METADATA_ADDRESSES or any(addr in net for net in _LINK_LOCAL)


def forbidden_host(host: str) -> str | None:
    """Why ``host`` (a URL's host) may never receive a key, or None."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _METADATA_NAMES:
        return f"{host} is a cloud metadata or the cluster's API endpoint"
    addr = _address(name)
    if addr is not None and forbidden_address(addr):
        return f"{host} is a link-local or metadata address"
    return None


@dataclass(frozen=True)
class AllowedHosts:
    names: tuple[str, ...] = ()  # exact names, or ".suffix" for "*.suffix"
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.names or self.networks)


def parse_allowed_hosts(text: str) -> AllowedHosts:
    names: list[str] = []
    networks = []
    for raw in text.split(","):
        item = raw.strip().rstrip(".").lower()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        names.append(item[1:] if item.startswith("*.") else item)  # "*.x.com" -> ".x.com"
    return AllowedHosts(tuple(names), tuple(networks))


def host_allowed(host: str, allowed: AllowedHosts) -> bool:
    if not allowed.restricted:
        return True
    name = host.strip("[]").rstrip(".").lower()
    addr = _address(name)
    if addr is not None:
        return any(addr in net for net in allowed.networks)
    return any(
        name.endswith(pattern) if pattern.startswith(".") else name == pattern
        for pattern in allowed.names
    )


def refused_addresses(addresses: Sequence[tuple[object, ...]]) -> list[str]:
    """Of getaddrinfo's answers, the link-local/metadata ones (as text)."""
    out = []
    for entry in addresses:
        sockaddr = entry[4]
        if isinstance(sockaddr, tuple) and sockaddr:
            addr = _address(str(sockaddr[0]))
            if addr is not None and forbidden_address(addr):
                out.append(str(sockaddr[0]))
    return out
