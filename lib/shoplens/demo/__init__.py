"""The embedded demo shop.

Two sources of landing files: :func:`generate`, the generated shop with its planted ground truth
(:mod:`shoplens.demo.generator`), and a small hand-checked landing fixture (``fixture_landing/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shoplens.demo.generator import generate

__all__ = ["FIXTURE_LANDING", "fixture_dates", "generate", "seed_landing"]

FIXTURE_LANDING = Path(__file__).parent / "fixture_landing"


def fixture_dates() -> list[str]:
    """Returns the run dates the fixture has event files for, in order."""
    return sorted(p.name for p in (FIXTURE_LANDING / "events").iterdir() if p.is_dir())


def seed_landing(landing_root: str) -> list[str]:
    """Copies the fixture's landing files under ``landing_root``; returns the run dates seeded."""
    shutil.copytree(FIXTURE_LANDING, Path(landing_root), dirs_exist_ok=True)
    return fixture_dates()
