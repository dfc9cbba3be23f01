"""Tests run against this working tree's `src/`, whatever ferry-sdk is installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
