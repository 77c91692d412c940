"""Credential values out of everything an upstream says that leaves the sidecar.

Providers quote the key they were sent in the error for a malformed or revoked
key ("Incorrect API key provided: sk-…"), and an upstream that is not what it
claims may quote any header it got.  Whatever an upstream answers can reach the
client (a relayed 4xx body, the attempts listed in our own error, an error
event in a stream), the admin ``/explain`` and the attempt span's status, so
one :class:`Scrubber` per attempt removes, from all of it:

* every credential value that attempt sent (the provider key in
  ``Authorization`` or the provider's own header, the client's own
  ``Authorization`` on a route that forwards it), and
* tokens shaped like keys it did not send (``sk-…``, ``Bearer …``, Google
  ``AIza…``, JWTs such as a ServiceAccount token, masked ``sk-proj-****…``),
  since an echo of somebody else's key is no better.

It is applied where an attempt's outcome is built (``attempt.py``) and where a
stream's bytes are forwarded (``dispatch.py``): everything downstream (errors,
records, spans, ``/explain``, logs) only ever sees scrubbed text.  Scrubbing
happens before any truncation, so a key cut at a length limit can't survive as
a fragment.  Answers (2xx) are forwarded as the model wrote them, except that a
value we sent is still replaced: a model can't know our key, so only an echo
puts it there.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
_REDACTED_B = REDACTED.encode()
# below this a "secret" is no secret (and replacing it would garble ordinary words)
_MIN_SECRET = 8

_KEY_SHAPED = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=*-]{8,}"  # a whole Authorization value
    r"|\b(?:sk|rk|pk)-[A-Za-z0-9_*.-]{8,}"  # OpenAI, Anthropic, DeepSeek, Moonshot …, masked too
    r"|\bAIza[0-9A-Za-z_-]{20,}"  # Google API keys
    r"|\b(?:gsk|xai|hf|ghp|gho|ghs|github_pat|glpat)[_-][A-Za-z0-9_-]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs (ServiceAccount tokens)
)
_KEY_SHAPED_B = re.compile(_KEY_SHAPED.pattern.encode())

# headers whose value is a credential whatever the provider calls its own
_ALWAYS_SECRET = ("authorization", "proxy-authorization", "api-key", "x-api-key")


class Scrubber:
    """Removes the given secret values and key-shaped tokens from upstream text."""

    __slots__ = ("_secrets", "_secrets_b")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a key is replaced before a shorter value inside it
        unique = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._secrets = tuple(unique)
        self._secrets_b = tuple(s.encode("utf-8", "replace") for s in unique)

    @classmethod
    def for_headers(cls, headers: Mapping[str, str], key_header: str | None) -> Scrubber:
        """The credential values among the headers one attempt sends.

        ``key_header`` is the provider's ``credentials.header``; ``Authorization``
        values count with and without their ``Bearer`` scheme.
        """
        wanted = _wanted(key_header.lower() if key_header else None)
        values = tuple(value for name, value in headers.items() if name.lower() in wanted)
        return _scrubber_for(values) if values else NO_SECRETS

    def text(self, text: str) -> str:
        """Upstream words for a person: every secret and key-shaped token replaced."""
        return _KEY_SHAPED.sub(REDACTED, self.sent_text(text))

    def data(self, data: bytes) -> bytes:
        """An upstream error body (JSON or not), scrubbed like :meth:`text`."""
        return _KEY_SHAPED_B.sub(_REDACTED_B, self.sent(data))

    def sent(self, data: bytes) -> bytes:
        """An answer (2xx) as the model wrote it, but for the values we sent: a model
        can't know our key, so only an echo puts it there."""
        for secret in self._secrets_b:
            if secret in data:
                data = data.replace(secret, _REDACTED_B)
        return data

    def sent_text(self, text: str, *, cut: bool = False) -> str:
        """:meth:`sent` for text already decoded (a streamed answer recorded for its span).

        ``cut``: the text was cut off at a length limit, so a secret may end it
        half-written; a tail that is the start of one (4 characters or more) goes too.
        """
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if cut:
            for secret in self._secrets:
                for n in range(min(len(secret) - 1, len(text)), 3, -1):
                    if text.endswith(secret[:n]):
                        text = text[:-n] + REDACTED
                        break
        return text

    def stream(self, data: bytes) -> bytes:
        """Forwarded stream bytes (whole events): the values we sent, always; key-shaped
        tokens only inside an error event, so an answer that talks about ``sk-`` keys
        reaches the client as the model wrote it.  A substring test per secret on the
        usual chunk: cheap on the hot path."""
        data = self.sent(data)
        if b'"error"' in data:
            return _KEY_SHAPED_B.sub(_REDACTED_B, data)
        return data


NO_SECRETS = Scrubber()


@functools.cache
def _wanted(key_header: str | None) -> frozenset[str]:
    return frozenset((*_ALWAYS_SECRET, *((key_header,) if key_header else ())))


@functools.lru_cache(maxsize=256)
def _scrubber_for(values: tuple[str, ...]) -> Scrubber:
    """The scrubber for these credential header values, made once per set of values.

    Every attempt to a provider sends the same key, so the sort and encode of
    its secrets is done once, not per attempt; a rotated key is a new entry.
    The cache holds credential values in this process's memory, as the
    credential store and the pools' request headers already do: at most 256
    sets (with ``forwardClientAuth``, the most recent clients' tokens among
    them), never written anywhere.
    """
    secrets: list[str] = []
    for value in values:
        secrets.append(value)
        scheme, _sep, token = value.partition(" ")
        if token and scheme.lower() in ("bearer", "basic", "token"):
            secrets.append(token.strip())
    return Scrubber(secrets)
