"""Which connections take a forward proxy: the environment's conventions and a provider's override."""

from __future__ import annotations

import pytest
from modelroute.proxy.upstream.egress import (
    EgressConfigError,
    EgressPolicy,
    ForwardProxy,
    parse_proxy_url,
)

ENV = {
    "HTTPS_PROXY": "http://user:p%40ss@proxy.corp:3128",
    "http_proxy": "proxy.corp:8080",  # no scheme: http, as curl takes it
    "NO_PROXY": "localhost, .svc,cluster.local,10.0.0.0/8,192.168.1.7,internal.example:8443,[::1]",
}


def test_https_and_http_proxies_and_no_proxy_entries() -> None:
    policy = EgressPolicy.from_environ(ENV)
    via = policy.proxy_for("api.deepseek.example", 443, tls=True)
    assert via is not None and (via.host, via.port) == ("proxy.corp", 3128)
    assert via.authorization() == "Basic dXNlcjpwQHNz"  # user:p@ss, percent-decoded
    plain = policy.proxy_for("api.deepseek.example", 80, tls=False)
    assert plain is not None and (plain.port, plain.authorization()) == (8080, None)
    direct = [
        ("localhost", 443),
        ("qwen.llm.svc", 443),  # suffix of .svc
        ("svc", 443),  # the leading dot also covers the name itself
        ("a.b.cluster.local", 443),
        ("10.3.4.5", 443),
        ("192.168.1.7", 443),
        ("internal.example", 8443),
        ("::1", 443),
        ("API.CLUSTER.LOCAL.", 443),  # case and a trailing dot don't matter
    ]
    for host, port in direct:
        assert policy.proxy_for(host, port, tls=True) is None, host
    for host, port in [("internal.example", 443), ("notlocalhost", 443), ("192.168.1.8", 443)]:
        assert policy.proxy_for(host, port, tls=True) is not None, host


def test_lower_case_wins_star_exempts_all_and_nothing_set_is_direct() -> None:
    both = EgressPolicy.from_environ({"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"})
    chosen = both.proxy_for("x", 443, tls=True)
    assert chosen is not None and chosen.host == "a"
    star = EgressPolicy.from_environ({"HTTPS_PROXY": "http://a:1", "NO_PROXY": "*"})
    assert star.proxy_for("x", 443, tls=True) is None
    assert EgressPolicy.from_environ({}).proxy_for("x", 443, tls=True) is None


def test_a_providers_override_beats_the_environment() -> None:
    policy = EgressPolicy.from_environ(ENV)
    own = ForwardProxy("egress.infra", 3128)
    assert policy.for_provider(own, direct=False).proxy_for("localhost", 443, True) == own
    assert policy.for_provider(None, direct=True).proxy_for("api.example", 443, True) is None


def test_credentials_never_show_and_bad_urls_say_what_to_fix() -> None:
    proxy = parse_proxy_url("http://alice:hunter2@proxy:3128", "HTTPS_PROXY")
    assert "hunter2" not in repr(proxy) and "alice" not in proxy.shown
    assert proxy.shown == "http://proxy:3128"
    with pytest.raises(EgressConfigError, match="HTTPS_PROXY: proxy scheme 'https'"):
        parse_proxy_url("https://proxy:3128", "HTTPS_PROXY")
    with pytest.raises(EgressConfigError, match="http_proxy: not a proxy URL"):
        parse_proxy_url("http://proxy:notaport", "http_proxy")
