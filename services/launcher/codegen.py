"""Code generation from proto/: the one routine behind `./shop generate` and the drift test.

`buf lint`, then `buf generate` (Python messages, .pyi stubs, gRPC stubs and
OpenAPI documents) and `buf build` (the descriptor set Envoy's transcoder
reads, with every import, google/rpc/error_details.proto included) into a
fresh directory, which then replaces gen/ so no stale file survives.

`buf breaking` compares proto/ with `contracts/released.binpb`, the image of
the contracts as last released: a change that would break a released client
(wire or JSON) fails CI. `./shop release-contracts` moves that baseline on
purpose, after a release.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from services.launcher import ROOT

BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"
DESCRIPTOR = "descriptor.binpb"
DESCRIPTOR_PATH = ROOT / "gen" / DESCRIPTOR
RELEASED = ROOT / "contracts" / "released.binpb"


def _buf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # buf runs the local plugins as `python`: make that this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [str(BUF), *args],
        cwd=ROOT,
        check=check,
        env={**os.environ, "PATH": path},
        capture_output=not check,
        text=True,
    )


def generate_into(out: Path) -> None:
    """Write everything gen/ should hold into `out` (an empty directory)."""
    _buf("lint")
    _buf("generate", "--output", str(out))
    _buf("build", "--as-file-descriptor-set", "--output", str(out / "gen" / DESCRIPTOR))


def regenerate() -> Path:
    """Regenerate gen/ in place."""
    with tempfile.TemporaryDirectory() as tmp:
        generate_into(Path(tmp))
        shutil.rmtree(ROOT / "gen", ignore_errors=True)
        shutil.copytree(Path(tmp) / "gen", ROOT / "gen")
    return ROOT / "gen"


def breaking_changes(against: Path = RELEASED) -> list[str]:
    """What `buf breaking` finds in proto/ against a released image (empty: none)."""
    result = _buf("breaking", "--against", str(against), "--error-format", "json", check=False)
    if result.returncode != 0 and not result.stdout.strip():
        raise RuntimeError(f"buf breaking failed: {result.stderr.strip()}")
    return [line for line in result.stdout.splitlines() if line.strip()]


def release_contracts() -> Path:
    """Make today's proto/ the baseline that later changes must not break."""
    RELEASED.parent.mkdir(exist_ok=True)
    _buf("build", "--exclude-source-info", "--output", str(RELEASED))
    return RELEASED
