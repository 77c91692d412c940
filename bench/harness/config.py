"""Where things are, which ports the rows listen on, and the knobs every module shares."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
RAW = RESULTS / "raw"
VENV_BIN = ROOT / ".venv" / "bin"
LITELLM_BIN = BENCH / ".litellm-venv" / "bin"
PIDFILE = RAW / "pids"

HOST = "127.0.0.1"
PORT_UPSTREAM = 18500
PORT_BARE = 18510
PORT_MR, PORT_MR_ADMIN = 18520, 18521
PORT_MR2, PORT_MR2_ADMIN = 18522, 18523
PORT_MRS, PORT_MRS_ADMIN = 18524, 18525
PORT_MRT, PORT_MRT_ADMIN = 18526, 18527
TAIL_RATIO = "0.01"  # MODELROUTE_TRACES_TAIL_RATIO of the modelroute-tail target
SAMPLED_RATIO = "0.01"  # OTEL_TRACES_SAMPLER_ARG of the modelroute-sampled target
PORT_NGINX = 18530
PORT_LITELLM = 18540
PORT_SINK = 18560
CHAT = "/v1/chat/completions"
THINK_MS = 30.0  # mean think time per connection in paced runs
C1_DURATION_FACTOR = 2  # the 1-connection runs last this many times --duration (see run_round)
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 50,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
