"""``modelroute fake-provider``: an OpenAI-compatible upstream with failure knobs."""

from __future__ import annotations

import argparse
import asyncio

from modelroute.cli.common import parse_hostport


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fake-provider",
        help="run a fake OpenAI-compatible provider (tests, demo, benchmarks)",
        description="Knobs can be changed live: POST /_control with a JSON object of knobs; "
        "GET /_stats shows what the fake saw.",
    )
    p.add_argument("--listen", default="127.0.0.1:18101", type=parse_hostport, metavar="HOST:PORT")
    p.add_argument("--region", default="local", help="echoed in the x-fake-region header")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    p.add_argument(
        "--ttft-ms", type=float, default=0.0, help="extra delay before the first stream chunk"
    )
    p.add_argument(
        "--tokens-per-second", type=float, default=0.0, help="stream pacing; 0 = no pause"
    )
    p.add_argument("--output-tokens", type=int, default=20)
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests that fail")
    p.add_argument("--error-status", type=int, default=503)
    p.add_argument("--retry-after", type=float, default=None, help="seconds, sent with errors")
    p.add_argument("--cut-after", type=int, default=None, help="cut streams after N chunks")
    p.add_argument("--slow-share", type=float, default=0.0, help="share of requests made slow")
    p.add_argument("--slow-extra-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modelroute.devtools.fake_provider import Knobs, start_fake_provider

    knobs = Knobs(
        region=args.region,
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        output_tokens=args.output_tokens,
        error_rate=args.error_rate,
        error_status=args.error_status,
        retry_after=args.retry_after,
        cut_after=args.cut_after,
        slow_share=args.slow_share,
        slow_extra_ms=args.slow_extra_ms,
    )
    host, port = args.listen

    async def serve() -> None:
        _, runner, bound = await start_fake_provider(host, port, knobs, args.seed)
        print(f"fake provider ({knobs.region}) on http://{host}:{bound}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    from modelroute.cli.common import run_async

    run_async(serve())
    return 0
