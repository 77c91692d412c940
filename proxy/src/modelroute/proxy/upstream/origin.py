"""Where a request goes and what its head says: a base URL's origin, and header encoding.

A handful of distinct base URLs serve every request, so each is parsed once
(:func:`origin_of` is cached); the request head is then joined from bytes
that are mostly ready-made (the ``Host`` value, the pool's default headers).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from .errors import RequestNotSent


class Origin(NamedTuple):
    """Where a base URL points; connections are shared by every base URL with the same ``peer``."""

    host: str
    port: int
    tls: bool
    host_header: bytes
    path_prefix: str
    query: str  # "" or "?..." kept from the base URL (e.g. Azure's ?api-version=)
    # what a connection is to: Azure's per-deployment base URLs on one host share them
    # ((host, port, tls); a field, not a property, as the pool keys on it several times a request)
    peer: tuple[str, int, bool]


@functools.lru_cache(maxsize=256)
def origin_of(base_url: str) -> Origin:
    """Parse a provider's base URL once (a handful of distinct URLs serve every request).

    Raises :class:`RequestNotSent` for a URL no request can go to: not http(s), no
    host, a port out of range, a host name that is not ASCII.
    """
    try:
        parts = urlsplit(base_url)
    except ValueError as exc:  # e.g. a broken [v6] literal
        raise RequestNotSent(str(exc)) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestNotSent(f"not an http(s) URL: {base_url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as exc:  # a port that is no number, or out of range
        raise RequestNotSent(str(exc)) from exc
    default = port == (443 if tls else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    try:
        host_header = (shown if default else f"{shown}:{port}").encode("ascii")
    except UnicodeEncodeError as exc:
        raise RequestNotSent(str(exc)) from exc
    query = f"?{parts.query}" if parts.query else ""
    return Origin(host, port, tls, host_header, parts.path.rstrip("/"), query, (host, port, tls))


def request_target(origin: Origin, path: str) -> bytes:
    """The request target for ``path`` under the base URL (its query joins the base URL's)."""
    query = origin.query
    if query and "?" in path:
        query = "&" + query[1:]
    try:
        return (origin.path_prefix + path + query).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no byte string says it
        raise RequestNotSent(str(exc)) from exc


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """Header lines, refusing any that would split the head (a line break or colon in a name)."""
    lines = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise RequestNotSent(
                f"header {name!r} holds a line break or colon; refusing to send it"
            )
        lines.append(f"{name}: {value}\r\n")
    # surrogateescape: a byte the app sent that isn't UTF-8 (aiohttp's server decodes headers
    # that way) goes upstream as the app sent it, instead of failing the request here
    try:
        return "".join(lines).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:  # a surrogate no byte stands for
        raise RequestNotSent(str(exc)) from exc
