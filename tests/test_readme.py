"""The README's quickstart runs, and its two commands are the ones CI uses."""

import re

from helpers import ROOT


README = (ROOT / "README.md").read_text()


def test_quickstart_block_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    quickstart = next(b for b in blocks if "@jr.rule" in b)
    assert len(quickstart.strip().splitlines()) <= 20
    namespace: dict = {}
    exec(compile(quickstart, "README.md", "exec"), namespace)
    assert float(namespace["params"]["w"][0]) > 0.0


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", README)
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("examples/quickstart.py")
    assert tests in (ROOT / ".ci" / "run").read_text()
