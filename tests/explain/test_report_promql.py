"""The PromQL in docs/explain.md gives the same 'routing saved' figure as `modelroute report`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOC = Path(__file__).parents[2] / "docs" / "explain.md"


def test_the_documented_query_says_87_5_percent(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make tools installs it)")
    match = re.search(r"```promql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, "docs/explain.md lost its PromQL block"
    rules = {
        "groups": [{"name": "doc", "rules": [{"record": "routing_saved", "expr": match.group(1)}]}]
    }
    # 1,000,000 output tokens over 10 minutes at $0.25/M; premium target $2.00/M; plus an
    # unpriced model whose tokens must not count on either side.
    route = 'route="general",provider="gw"'
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'modelroute_cost_usd_total{{{route},model="flash"}}',
                        "values": "0+0.025x10",
                    },
                    {
                        "series": f'modelroute_tokens_total{{{route},model="flash",type="output"}}',
                        "values": "0+100000x10",
                    },
                    {
                        "series": f'modelroute_tokens_total{{{route},model="free",type="output"}}',
                        "values": "0+5000x10",
                    },
                    {
                        "series": (
                            f'modelroute_unpriced_tokens_total{{{route},model="free",type="output"}}'
                        ),
                        "values": "0+5000x10",
                    },
                    {
                        "series": 'modelroute_route_max_output_price_usd{route="general"}',
                        "values": "0.000002x10",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "routing_saved",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "routing_saved", "value": 0.875}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
