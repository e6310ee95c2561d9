"""The experiments' own checks (`python -m pytest experiments`) share the tests' dataset helpers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
