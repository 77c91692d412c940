"""The sidecar's own check of where a provider key goes, at connect time.

The model refuses metadata and link-local base URLs when a ModelProvider is
written (``resources/egress_rules.py``); this repeats the check on what the host
name *resolves to* when the connection is made (a DNS name an author controls
can point at ``169.254.169.254``), and applies the namespace's allow-list of
provider hosts, which the injector hands the sidecar in
``MODELROUTE_ALLOWED_PROVIDER_HOSTS`` (from the namespace annotation
``modelroute.io/allowed-provider-hosts``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

from modelroute.resources.egress_rules import (
    ALLOWED_HOSTS_ANNOTATION,
    ALLOWED_HOSTS_ENV,
    AllowedHosts,
    forbidden_host,
    host_allowed,
    parse_allowed_hosts,
    refused_addresses,
)

from .errors import RequestNotSent


class ConnectRefused(RequestNotSent):
    """A host the key must not go to: nothing was sent (the attempt is ``not_sent``)."""


@functools.cache
def _allowed(text: str) -> AllowedHosts:
    return parse_allowed_hosts(text)


def check_origin(host: str) -> None:
    """Refuse (nothing is sent) a metadata host or one outside the namespace's allow-list."""
    why = _refusal(host, os.environ.get(ALLOWED_HOSTS_ENV, ""))
    if why:
        raise ConnectRefused(why)


@functools.lru_cache(maxsize=256)
def _refusal(host: str, allowed_text: str) -> str | None:
    """Why a key must not go to ``host`` under this allow-list, or None.

    Every attempt asks, and a handful of provider hosts serve them all: the
    verdict (an address parsed, the allow-list matched) is worked out once per
    host and allow-list.  The allow-list text is part of the key, so a changed
    environment is judged afresh.
    """
    why = forbidden_host(host)
    if why:
        return f"not connecting to {host}: {why}"
    if not host_allowed(host, _allowed(allowed_text)):
        return f"not connecting to {host}: not in the namespace's {ALLOWED_HOSTS_ANNOTATION}"
    return None


def check_resolved(host: str, addresses: Sequence[tuple[object, ...]]) -> None:
    bad = refused_addresses(addresses)
    if bad:
        raise ConnectRefused(
            f"not connecting to {host}: it resolves to {', '.join(bad)}, "
            "a link-local or metadata address"
        )
