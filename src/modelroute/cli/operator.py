"""``modelroute operator``: run the kopf operator (handlers in ``modelroute.operator.handlers``).

Peering priorities: two replicas with equal priority freeze each other (kopf
pauses both when it sees a same-priority peer).  The default priority is
derived from the pod's hostname (unique per replica of a Deployment), so
replicas differ without configuration; ``--priority`` overrides it.
"""

from __future__ import annotations

import argparse
import hashlib
import socket


def default_priority(hostname: str | None = None) -> int:
    """1..9999 from the hostname, stable for the life of the pod and different per replica."""
    name = hostname or socket.gethostname()
    return 1 + int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % 9999


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "operator", help="run the operator (kopf) that compiles and rolls out tables"
    )
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        help="kopf peering priority (default: derived from the hostname)",
    )
    p.add_argument("--standalone", action="store_true", help="no peering (single replica, tests)")
    p.add_argument("--peering", default="modelroute", help="ClusterKopfPeering name")
    p.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint"
    )
    p.add_argument(
        "--readiness",
        default="0.0.0.0:8081",
        metavar="HOST:PORT",
        help="serve /readyz here: passes once the injector's namespace view is synced",
    )
    p.add_argument(
        "--webhook-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve admission webhooks here (e.g. 0.0.0.0:9443)",
    )
    p.add_argument("--webhook-cert", default=None, metavar="PATH")
    p.add_argument("--webhook-key", default=None, metavar="PATH")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from modelroute.operator import handlers

    handlers.OPTIONS.webhook_listen = args.webhook_listen
    handlers.OPTIONS.webhook_cert = args.webhook_cert
    handlers.OPTIONS.webhook_key = args.webhook_key
    handlers.OPTIONS.peering = args.peering
    handlers.OPTIONS.readiness_listen = args.readiness or None
    kopf.configure(verbose=args.verbose)
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            standalone=args.standalone,
            priority=args.priority if args.priority is not None else default_priority(),
            # kopf treats a given peering name as mandatory, standalone or not: with one,
            # a standalone operator waits for a peering resource forever and watches nothing
            peering_name=None if args.standalone else args.peering,
            liveness_endpoint=args.liveness,
        )
    )
    return 0
