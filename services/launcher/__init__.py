"""The local platform: starts, supervises and stops every component on one machine."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# How every platform process finds the services and the generated code.
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "gen")])
