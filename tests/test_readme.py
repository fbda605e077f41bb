"""The README: short, every Python block runs, its two commands are CI's."""

import contextlib
import io
import re

from helpers import ROOT


README = (ROOT / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_is_short():
    assert len(README.splitlines()) <= 180


def test_every_python_block_runs_in_order():
    """Blocks share one namespace, as a reader running them in turn would."""
    blocks = _python_blocks()
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md (block {i + 1})", "exec"), namespace)
    assert float(namespace["loss"]) < 0.1  # the quickstart trained
    assert "ScaledMomentumState ('count', 'velocity')" in out.getvalue()
    assert "checks passed" in out.getvalue()


def test_quickstart_and_own_rule_are_short():
    blocks = _python_blocks()
    quickstart = blocks[0]
    own_rule = next(b for b in blocks if "@jr.rule" in b)
    assert len(quickstart.strip().splitlines()) <= 20
    assert len(own_rule.strip().splitlines()) <= 15


def test_readme_points_to_the_docs_and_the_optax_state_conversion():
    assert "mkdocs serve" in README
    assert "jr.from_optax(" in README
    assert "jr.to_optax(" in README
    for link in re.findall(r"\]\((docs/[\w./-]+)\)", README):
        assert (ROOT / link).is_file(), link


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", README)
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("examples/quickstart.py")
    assert tests in (ROOT / ".ci" / "run").read_text()
