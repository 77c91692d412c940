"""What the validating webhook says, as pure functions of what it read.

The webhook's HTTPS port takes reviews from anyone who can reach it (kopf does
not authenticate the API server), so its answers must not enumerate what a
namespace holds: suggestions and "known:" lists stay in the route's status,
which only those who may read the route see (:func:`without_names`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from modelroute.resources import ModelProvider
from modelroute.resources.egress_rules import (
    ALLOWED_HOSTS_ANNOTATION,
    host_allowed,
    parse_allowed_hosts,
)

_NAME_LISTS = re.compile(r"; did you mean [^?]*\?| \(known: [^)]*\)")


def without_names(message: str) -> str:
    """A compiler message without the names of the namespace's other objects."""
    return _NAME_LISTS.sub("", message)


def provider_host_errors(provider: ModelProvider, ns: str, allowed_text: str) -> list[str]:
    """Endpoints outside the namespace's ``modelroute.io/allowed-provider-hosts`` (if set)."""
    allowed = parse_allowed_hosts(allowed_text)
    errors = []
    for i, endpoint in enumerate(provider.spec.endpoints):
        host = urlsplit(endpoint.base_url).hostname or ""
        if not host_allowed(host, allowed):
            errors.append(
                f"spec.endpoints[{i}].baseURL: {host} is not among namespace {ns}'s "
                f"{ALLOWED_HOSTS_ANNOTATION} ({allowed_text}); ask a cluster admin to add it"
            )
    return errors
