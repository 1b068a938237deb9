"""Paths the tests share: everything a test reads lives inside the project tree."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MOSS_DEMO = FIXTURES / "moss-demo"  # real records and videos of the reference repository (see its README)
