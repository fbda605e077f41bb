"""The examples run, as the README tells users to run them."""

import json
import os
import subprocess
import sys

from helpers import ROOT, load_example


def test_quickstart_reaches_90_percent_accuracy():
    # Run as a script, exactly like the README's demo command.
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert sum(line.startswith("epoch") for line in lines) == 15
    accuracy = float(lines[-1].split()[2])
    assert accuracy > 0.9, result.stdout


def test_custom_rule_walkthrough():
    example = load_example("custom_rule")
    final_loss = example.main(steps=100)
    assert final_loss < 1e-3  # the noise floor is 1e-4


def test_logging_example_writes_json_lines_every_n_steps(tmp_path):
    path = tmp_path / "steps.jsonl"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "step_logging.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 50, 100]
    assert all(r["nonfinite"] == [] and r["grad_norm"] > 0 for r in records)
    assert "update/param" in result.stdout


def test_sweep_example_is_one_program_and_matches_runs_alone(tmp_path):
    # 10 steps; the grid's first and last settings also run one by one. In
    # float64: in float32 the vmapped and unbatched gradients round differently
    # (by 1e-8), which Adam amplifies where a gradient is near zero.
    out = tmp_path / "sweep.png"
    args = ["--steps", "10", "--one-by-one", "2", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sweep.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "JAX_ENABLE_X64": "1"},
    )
    lines = result.stdout.splitlines()

    def line(prefix: str) -> list[str]:
        return next(x for x in lines if x.startswith(prefix)).split()

    assert line("sweep:")[line("sweep:").index("compilation(s),") - 1] == "1"
    alone = line("one by one:")
    assert alone[alone.index("compilation(s),") - 1] == "2"  # one per program
    difference = line("sweep run vs the same run alone:")
    assert float(difference[difference.index("(relative),") - 1]) < 1e-12, result.stdout
    assert float(line("best:")[-1]) > 0.5, result.stdout  # chance is 0.1
    assert out.read_bytes().startswith(b"\x89PNG")
