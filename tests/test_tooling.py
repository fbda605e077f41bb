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


def _private_core_imports(path) -> list[str]:
    """Imports of the core's submodules (``jaxopt_rules._core._x``) in a file."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            names = [alias.name for alias in node.names]
            if module.startswith("jaxopt_rules._core.") or (
                module == "jaxopt_rules._core" and any(n.startswith("_") for n in names)
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {module}")
        elif isinstance(node, ast.Import):
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.startswith("jaxopt_rules._core.")
            ]
    return found


def test_the_core_is_imported_through_its_init_only():
    """Outside ``_core/``, code imports the core from ``jaxopt_rules._core`` only."""
    files = [
        p
        for folder in ("jaxopt_rules", "examples", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
        if (ROOT / "jaxopt_rules" / "_core") not in p.parents
    ]
    found = [line for p in files for line in _private_core_imports(p)]
    assert not found, "\n".join(found)
