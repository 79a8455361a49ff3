"""The local platform: starts, supervises and stops every component on one machine."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
