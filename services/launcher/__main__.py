"""The platform launcher: `./shop up | up --detach | up --observability | down | status |
admin | generate | release-contracts`.

`up` starts everything in the foreground and stops it on Ctrl-C; `up --detach`
returns once everything is healthy and `down` stops it later.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services import topology
from services.kit.config import redact_url
from services.kit.dev import SECRETS_FILE
from services.launcher import PYTHONPATH, ROOT, certs, codegen, procs
from services.launcher.platform import (
    DEMO_ADMIN_EMAIL,
    DEMO_TENANT,
    LauncherConfig,
    Platform,
    State,
)


def endpoints(s: State, run_dir: Path) -> list[tuple[str, str]]:
    """Where each part of a running platform listens (passwords redacted), process by
    process of the topology."""
    secrets_file = run_dir / SECRETS_FILE

    def line(p: topology.Process) -> tuple[str, str]:
        where = (
            redact_url(s.urls.get(p.provides, ""))
            if p.provides
            else ", ".join(s.targets.get(p.name, []))
        )
        label = f"{p.label}s" if p.replicas else p.label
        said = p.note.format(where=where, rest_url=s.rest_url, secrets_file=secrets_file)
        scrape = s.metrics.get(p.name)
        return label, f"{said}; metrics {', '.join(scrape)}" if scrape else said

    services = topology.of_kind(topology.Kind.SERVER, topology.Kind.WORKER)
    outside = topology.of_kind(topology.Kind.STUB, topology.Kind.INFRA)
    return [
        ("REST edge", f"{s.rest_url}        e.g. curl {s.rest_url}/v1/products -H 'X-Tenant-Id: demo'"),
        ("gRPC edge", f"{s.grpc_target} (grpcurl -protoset gen/descriptor.binpb)"),
        *(line(p) for p in services),
        ("demo admin", f"{DEMO_ADMIN_EMAIL} (tenant {DEMO_TENANT}); password in {secrets_file}"),
        *(line(p) for p in outside),
        ("Envoy admin", s.envoy_admin_url),
        *s.observability.items(),
        ("logs", s.logs_dir),
    ]  # fmt: skip


def _print_endpoints(state: State, run_dir: Path) -> None:
    shown = endpoints(state, run_dir)
    width = max(len(name) for name, _ in shown)
    for name, where in shown:
        print(f"  {name:{width}} {where}")


def _status(platform: Platform) -> int:
    recorded = platform.recorded()
    if recorded is None:
        print(f"not running (nothing recorded in {platform.run_dir}); `./shop up` starts it")
        return 0
    print(f"run dir {platform.run_dir} (endpoints recorded in {platform.state_path})")
    if recorded.rest_url:
        _print_endpoints(recorded, platform.run_dir)
    print("processes")
    processes = platform.status()
    width = max((len(name) for name in processes), default=0)
    for name, state in processes.items():
        print(f"  {name:{width}} {state}")
    return 0


def _admin(platform: Platform, argv: list[str]) -> int:
    """The user service's operator commands (`python -m services.user.admin`) against
    this run dir's database."""
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    recorded = platform.recorded()
    if not env.get("DATABASE_URL"):
        if recorded is None or not recorded.database_url:
            if argv[:1] == ["create-admin"]:
                print(
                    f"shop: the platform is not running (nothing recorded in "
                    f"{platform.run_dir}): start it with `./shop up --detach`, "
                    "or set DATABASE_URL",
                    file=sys.stderr,
                )
                return 1
        else:
            env["DATABASE_URL"] = recorded.database_url
    command = [sys.executable, "-m", "services.user.admin", *argv]
    return subprocess.run(command, env=env, cwd=ROOT, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole platform")
    up.add_argument("--detach", "-d", action="store_true", help="return once healthy")
    up.add_argument("--no-generate", action="store_true", help="skip buf lint + generate")
    up.add_argument(
        "--observability",
        action="store_true",
        help="also collect traces (an OTLP receiver) and start Prometheus if installed",
    )
    sub.add_parser("down", help="stop a detached platform")
    sub.add_parser("status", help="show where it listens and what runs")
    sub.add_parser("generate", help="buf lint + buf generate")
    sub.add_parser(
        "release-contracts", help="make proto/ the baseline that buf breaking checks against"
    )
    admin = sub.add_parser(
        "admin", help="operator commands (create-admin, keygen) against the running platform"
    )
    admin.add_argument("args", nargs=argparse.REMAINDER)
    issue = sub.add_parser(
        "certs", help="issue the platform CA and every process's certificate into a directory"
    )
    issue.add_argument("directory", help="where they go (cert-manager's Secret layout)")
    issue.add_argument("--days", default=str(certs.DEFAULT_DAYS), help="validity in days")
    args = parser.parse_args(argv)

    if args.command == "certs":
        return certs.main([args.directory, "--days", args.days])

    if args.command == "generate":
        codegen.regenerate()
        return 0
    if args.command == "release-contracts":
        print(f"released contracts: {codegen.release_contracts()}")
        return 0
    config = LauncherConfig.from_env()
    if getattr(args, "observability", False):
        config = dataclasses.replace(config, observability=True)
    platform = Platform(config)
    if args.command == "admin":
        return _admin(platform, args.args)
    if args.command == "down":
        if platform.down():
            print("stopped")
        else:
            print(f"nothing to stop: no platform recorded in {platform.run_dir}")
        return 0
    if args.command == "status":
        return _status(platform)

    try:
        # Before the slow codegen: a taken port fails at once.
        platform.preflight()
        if not args.no_generate:
            codegen.regenerate()
        platform.up()
    except procs.LaunchError as exc:
        print(f"shop: {exc}", file=sys.stderr)
        return 1
    print(f"\nshop platform is up (run dir {platform.run_dir})")
    _print_endpoints(platform.state, platform.run_dir)
    client = platform.state.client_tls
    if client is not None:
        print(
            "\nservice ports take platform certificates only (mTLS); direct calls present "
            f"the launcher's: --cacert {client.ca} --cert {client.cert} --key {client.key}"
        )
    print(f"\nendpoints recorded in {platform.state_path}; `./shop status` shows them", flush=True)
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
    # `./shop status | head` ends quietly, like any other command-line tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
