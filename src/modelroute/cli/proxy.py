"""``modelroute proxy``: the sidecar (local mode with ``--routes``, in a cluster with ``--kube``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from modelroute.cli.common import parse_hostport, run_async


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "proxy",
        help="run the routing sidecar (OpenAI-compatible API + admin port)",
        description="Local mode: --routes FILE (the same YAML you would kubectl apply). "
        "In a cluster: --kube (watches this namespace's modelroute-table ConfigMap) with "
        "--table-file as the mounted fallback.",
    )
    p.add_argument(
        "--routes",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="ModelProvider/ModelRoute/FailoverPolicy YAML (file or directory); repeatable",
    )
    p.add_argument("--listen", default="127.0.0.1:15400", type=parse_hostport, metavar="HOST:PORT")
    p.add_argument(
        "--admin",
        default="127.0.0.1:15401",
        metavar="HOST:PORT",
        help="admin port (/metrics, /status, /healthz, /readyz; /explain too when on loopback); "
        "'off' disables it",
    )
    p.add_argument(
        "--explain",
        default=None,
        type=parse_hostport,
        metavar="HOST:PORT",
        help="serve /explain on a listener of its own (the injected sidecar: 127.0.0.1:15402)",
    )
    p.add_argument("--table-file", type=Path, default=None, help="a compiled table.json to serve")
    p.add_argument("--kube", action="store_true", help="watch the modelroute-table ConfigMap")
    p.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace to watch (default: $POD_NAMESPACE, or the kubeconfig's)",
    )
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument(
        "--secrets-dir",
        type=Path,
        default=Path("/var/run/secrets/modelroute"),
        help="where provider Secrets are mounted (<secret>/<key>)",
    )
    p.add_argument(
        "--redis",
        default=os.environ.get("MODELROUTE_REDIS_URL"),
        metavar="URL",
        help="share budget counters across the namespace's sidecars (default: per pod)",
    )
    p.add_argument(
        "--redis-ca-file",
        type=Path,
        default=os.environ.get("MODELROUTE_REDIS_CA_FILE") or None,
        metavar="FILE",
        help="CA bundle (PEM) that signs the rediss:// server's certificate (default: system CAs)",
    )
    p.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024)
    p.add_argument("--drain-seconds", type=float, default=25.0)
    p.add_argument(
        "--probe-concurrency",
        type=int,
        default=8,
        metavar="N",
        help="active endpoint health probes out at once (docs/failover.md §3b)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); only the first serves the admin port",
    )
    p.add_argument("--log-level", default=os.environ.get("MODELROUTE_LOG_LEVEL", "info"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from modelroute.proxy.process import serve
    from modelroute.proxy.server import ProxyConfig
    from modelroute.proxy.sources import ConfigError

    admin = None if args.admin == "off" else parse_hostport(args.admin)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.probe_concurrency < 1:
        print("error: --probe-concurrency must be at least 1", file=sys.stderr)
        return 2
    config = ProxyConfig(
        listen=args.listen,
        admin=admin,
        explain=args.explain,
        route_files=list(args.routes),
        table_file=args.table_file,
        kube=args.kube,
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        secrets_dir=args.secrets_dir,
        redis_url=args.redis,
        # a password from a Secret, by environment only (arguments show in `ps`)
        redis_password=os.environ.get("MODELROUTE_REDIS_PASSWORD") or None,
        redis_ca_file=args.redis_ca_file,
        max_body_bytes=args.max_body_bytes,
        drain_seconds=args.drain_seconds,
        probe_concurrency=args.probe_concurrency,
        reuse_port=args.workers > 1,
    )
    try:
        config.check()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:  # a worker: same port, no admin port
            config.admin = None
            children = []
            break
        children.append(pid)
    if children:
        # Kubernetes signals PID 1 only: pass SIGTERM on at once, so every worker
        # drains in parallel instead of one after the other
        def stop_children() -> None:
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

        config.on_stop = stop_children
    try:
        run_async(serve(config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)  # a no-op when on_stop already did
        for pid in children:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    return 0
