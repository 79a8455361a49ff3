"""Code generation from proto/: the one routine behind `./shop generate` and the drift test.

`buf lint`, then `buf generate` (Python messages, .pyi stubs, gRPC stubs and
OpenAPI documents) and `buf build` (the descriptor set Envoy's transcoder
reads, with every import, google/rpc/error_details.proto included) into a
fresh directory, which then replaces gen/ so no stale file survives.
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


def _buf(*args: str) -> None:
    # buf runs the local plugins as `python`: make that this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run([str(BUF), *args], cwd=ROOT, check=True, env={**os.environ, "PATH": path})


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
