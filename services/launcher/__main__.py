"""The platform launcher: `./shop up | up --detach | down | status | generate | release-contracts`.

`up` starts everything in the foreground and stops it on Ctrl-C; `up --detach`
returns once everything is healthy and `down` stops it later.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from services.launcher import codegen, procs
from services.launcher.platform import (
    DEMO_ADMIN_EMAIL,
    DEMO_COURIER,
    DEMO_TENANT,
    LauncherConfig,
    Platform,
)


def _print_ready(platform: Platform) -> None:
    s = platform.state
    print(
        f"""
shop platform is up (run dir {platform.run_dir})
  REST edge          {s.rest_url}        e.g. curl {s.rest_url}/v1/products -H 'X-Tenant-Id: demo'
  gRPC edge          {s.grpc_target}
  order service      {s.order_grpc_target} (direct gRPC, reflection on)
  product gateway    {s.product_grpc_target} (v1 and v2)
  user service       {s.user_grpc_target} (tokens; JWKS at {s.rest_url}/.well-known/jwks.json)
  rate-limit service {s.ratelimit_grpc_target}
  event gateway      {s.event_grpc_target} (webhooks: POST {s.rest_url}/v1/events, source {DEMO_COURIER!r};
                     its secret `webhook_secret` is in {platform.run_dir / "secrets.json"})
  event workers      {", ".join(s.event_worker_targets)} (health)
  demo admin         {DEMO_ADMIN_EMAIL} (tenant {DEMO_TENANT}); password in {platform.run_dir / "secrets.json"}
  ERP stub           {s.erp_url} (faults: PUT {s.erp_url}/_admin/faults)
  Warehouse stub     {s.warehouse_url}
  Routing stub       {s.routing_url} (2 s per call; faults: PUT {s.routing_url}/_admin/faults)
  PostgreSQL         {s.database_url.split("@")[-1]}
  Redis              {s.redis_url}
  MongoDB (wire)     {s.mongo_url}
  Envoy admin        {s.envoy_admin_url}
  logs               {platform.run_dir / "logs"}
""",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole platform")
    up.add_argument("--detach", "-d", action="store_true", help="return once healthy")
    up.add_argument("--no-generate", action="store_true", help="skip buf lint + generate")
    sub.add_parser("down", help="stop a detached platform")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("generate", help="buf lint + buf generate")
    sub.add_parser(
        "release-contracts", help="make proto/ the baseline that buf breaking checks against"
    )
    args = parser.parse_args(argv)

    if args.command == "generate":
        codegen.regenerate()
        return 0
    if args.command == "release-contracts":
        print(f"released contracts: {codegen.release_contracts()}")
        return 0
    platform = Platform(LauncherConfig.from_env())
    if args.command == "down":
        platform.down()
        print("stopped")
        return 0
    if args.command == "status":
        for name, state in (platform.status() or {"platform": "not running"}).items():
            print(f"{name:10} {state}")
        return 0

    if not args.no_generate:
        codegen.regenerate()
    try:
        platform.up()
    except procs.LaunchError as exc:
        print(f"shop: {exc}", file=sys.stderr)
        return 1
    _print_ready(platform)
    if args.detach:
        print("detached: `./shop down` stops it", flush=True)
        return 0
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print("Ctrl-C stops everything", flush=True)
    while not stopping:
        for proc in platform.exited():
            print(
                f"shop: {proc.name} exited ({proc.popen.returncode}); see {proc.log}",
                file=sys.stderr,
            )
            stopping = True
        time.sleep(0.5)
    print("stopping...", flush=True)
    platform.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
