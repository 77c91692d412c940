"""The cost report: known numbers in, the 'routing saved you X %' figure out."""

# ruff: noqa: E501 - exposition lines are kept whole, as a sidecar writes them

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from modelroute.proxy.costreport import CostReportError, parse_exposition
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from modelroute.cli import main

# 1,000,000 output tokens on a $0.25/M model, against a $2.00/M premium target:
# $0.25 spent vs $2.00 all-premium, saved 87.5 %.  Input tokens are unpriced.
SCRAPE = """\
# HELP modelroute_cost_usd_total USD spent on upstream tokens.
# TYPE modelroute_cost_usd_total counter
modelroute_cost_usd_total{route="general",model="deepseek-v4-flash",provider="gateway"} 0.25
# HELP modelroute_tokens_total Tokens by type.
# TYPE modelroute_tokens_total counter
modelroute_tokens_total{route="general",model="deepseek-v4-flash",provider="gateway",type="input"} 400000
modelroute_tokens_total{route="general",model="deepseek-v4-flash",provider="gateway",type="output"} 1000000
# HELP modelroute_unpriced_tokens_total Tokens of models without a known price.
# TYPE modelroute_unpriced_tokens_total counter
modelroute_unpriced_tokens_total{route="general",model="deepseek-v4-flash",provider="gateway",type="input"} 400000
# HELP modelroute_route_max_output_price_usd USD per output token of the route's dearest target.
# TYPE modelroute_route_max_output_price_usd gauge
modelroute_route_max_output_price_usd{route="general"} 2e-06
"""


def _registry_scrape(openmetrics: bool = False) -> str:
    """The same numbers, written by prometheus_client itself (as the sidecar's /metrics is)."""
    reg = CollectorRegistry()
    labels = ["route", "model", "provider"]
    cost = Counter("modelroute_cost_usd", "USD spent", labels, registry=reg)
    tokens = Counter("modelroute_tokens", "tokens", [*labels, "type"], registry=reg)
    unpriced = Counter("modelroute_unpriced_tokens", "unpriced", [*labels, "type"], registry=reg)
    max_price = Gauge("modelroute_route_max_output_price_usd", "max", ["route"], registry=reg)
    cost.labels("general", "deepseek-v4-flash", "gateway").inc(0.25)
    tokens.labels("general", "deepseek-v4-flash", "gateway", "output").inc(1_000_000)
    tokens.labels("general", "deepseek-v4-flash", "gateway", "input").inc(400_000)
    unpriced.labels("general", "deepseek-v4-flash", "gateway", "input").inc(400_000)
    max_price.labels("general").set(2.00 / 1_000_000)
    return (generate_openmetrics(reg) if openmetrics else generate_latest(reg)).decode()


@pytest.mark.parametrize(
    "text",
    [SCRAPE, _registry_scrape(), _registry_scrape(openmetrics=True)],
    ids=["hand-written", "prometheus_client", "openmetrics"],
)
def test_saved_87_5_percent(text: str) -> None:
    report = parse_exposition(text, "scrape")
    [route] = report.routes
    assert route.route == "general"
    assert route.cost_usd == pytest.approx(0.25)
    assert route.output_tokens == 1_000_000
    assert route.counterfactual_usd == pytest.approx(2.00)
    assert route.saved_fraction == pytest.approx(0.875)
    assert report.saved_fraction == pytest.approx(0.875)
    assert route.unpriced_input_tokens == 400_000
    assert not report.input_priced
    text_out = report.to_text()
    assert "routing saved you 87.5 %" in text_out
    assert "400,000 input tokens had no known price" in text_out


def test_several_routes_and_an_unpriced_model() -> None:
    text = (
        SCRAPE
        + """\
modelroute_cost_usd_total{route="light",model="qwen3-8b",provider="gateway"} 0.02
modelroute_tokens_total{route="light",model="qwen3-8b",provider="gateway",type="output"} 2000000
modelroute_tokens_total{route="light",model="qwen3.5-32b",provider="gateway",type="output"} 50000
modelroute_unpriced_tokens_total{route="light",model="qwen3.5-32b",provider="gateway",type="output"} 50000
modelroute_route_max_output_price_usd{route="light"} 1e-08
"""
    )
    report = parse_exposition(text, "scrape")
    by_name = {r.route: r for r in report.routes}
    light = by_name["light"]
    # only the 2,000,000 priced tokens are compared: 2e6 x $0.01/M = $0.02, saved 0 %
    assert light.counterfactual_usd == pytest.approx(0.02)
    assert light.saved_fraction == pytest.approx(0.0)
    assert light.unpriced_output_tokens == 50_000
    # overall: spent 0.27 against 2.02
    assert report.cost_usd == pytest.approx(0.27)
    assert report.counterfactual_usd == pytest.approx(2.02)
    assert report.saved_fraction == pytest.approx(1 - 0.27 / 2.02)
    out = report.to_text()
    unpriced_row = next(ln for ln in out.splitlines() if "qwen3.5-32b" in ln)
    assert "unpriced" in unpriced_row
    assert "$0.0000" not in unpriced_row
    assert "50,000 output" in out


def test_federated_scrapes_are_summed_and_the_max_price_is_the_largest() -> None:
    text = """\
modelroute_cost_usd_total{instance="a",route="r",model="m",provider="p"} 1.0
modelroute_cost_usd_total{instance="b",route="r",model="m",provider="p"} 2.0
modelroute_tokens_total{instance="a",route="r",model="m",provider="p",type="output"} 1000000
modelroute_tokens_total{instance="b",route="r",model="m",provider="p",type="output"} 2000000
modelroute_route_max_output_price_usd{instance="a",route="r"} 3e-06
modelroute_route_max_output_price_usd{instance="b",route="r"} 4e-06
"""
    [route] = parse_exposition(text).routes
    assert route.cost_usd == pytest.approx(3.0)
    assert route.output_tokens == 3_000_000
    assert route.counterfactual_usd == pytest.approx(12.0)
    assert route.saved_fraction == pytest.approx(0.75)


def test_without_the_max_price_gauge_the_saving_is_unknown() -> None:
    text = SCRAPE.split("# HELP modelroute_route_max_output_price_usd")[0]
    report = parse_exposition(text)
    assert report.counterfactual_usd is None
    assert report.saved_fraction is None
    assert "routing saved" not in report.to_text()
    assert "unknown" in report.to_text()
    assert json.loads(json.dumps(report.to_dict()))["savedFraction"] is None


def test_priced_input_makes_the_saving_a_lower_bound() -> None:
    text = SCRAPE.replace(
        'modelroute_unpriced_tokens_total{route="general",model="deepseek-v4-flash",'
        'provider="gateway",type="input"} 400000\n',
        "",
    )
    report = parse_exposition(text)
    assert report.input_priced
    assert "lower bound" in report.to_text()


def test_no_traffic_yet() -> None:
    text = "# HELP modelroute_cost_usd_total x\n# TYPE modelroute_cost_usd_total counter\n"
    report = parse_exposition(text, "scrape")
    assert report.routes == []
    assert "no traffic recorded yet" in report.to_text()


@pytest.mark.parametrize(
    "text",
    ["process_cpu_seconds_total 12.5\n", "this is { not an exposition\n"],
    ids=["other-exporter", "garbage"],
)
def test_not_a_modelroute_scrape(text: str) -> None:
    with pytest.raises(CostReportError):
        parse_exposition(text, "scrape")


# -- the CLI ------------------------------------------------------------------------------


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = SCRAPE.encode()
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_cli_from_a_url(metrics_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--metrics", f"{metrics_url}/metrics", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["savedFraction"] == pytest.approx(0.875)
    assert doc["routes"][0]["maxOutputUSDPerMTok"] == pytest.approx(2.0)


def test_cli_http_error_is_clear(metrics_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--metrics", f"{metrics_url}/nope", "--timeout", "2"]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_cli_refused_connection(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["report", "--metrics", f"http://127.0.0.1:{port}/metrics", "--timeout", "2"]) == 1
    assert "cannot fetch" in capsys.readouterr().err


def test_cli_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = main(["report", "--metrics", f"http://127.0.0.1:{port}/", "--timeout", "0.3"])
    assert code == 1
    assert "cannot fetch" in capsys.readouterr().err


def test_cli_from_a_saved_scrape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "scrape.txt"
    saved.write_text(SCRAPE, encoding="utf-8")
    assert main(["report", "--metrics", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "gateway/deepseek-v4-flash" in out
    assert "routing saved you 87.5 %" in out
    assert main(["report", "--metrics", str(tmp_path / "missing.txt")]) == 1
    assert "cannot read" in capsys.readouterr().err
