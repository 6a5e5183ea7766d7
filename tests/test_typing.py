"""The pure core is mypy-clean (STYLE.md)."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_models_package_is_mypy_clean():
    proc = subprocess.run([sys.executable, "-m", "mypy", "models", "--ignore-missing-imports", "--no-error-summary"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
