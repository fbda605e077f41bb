"""The package stays ruff- and pyright-clean (the README promises it)."""

import subprocess
import sys

from helpers import ROOT


PATHS = ["jaxopt_rules", "tests", "examples", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_lint():
    result = _run("ruff", "check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = _run("ruff", "format", "--check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyright():
    result = _run("pyright", "--pythonpath", sys.executable, "jaxopt_rules")
    assert result.returncode == 0, result.stdout + result.stderr
