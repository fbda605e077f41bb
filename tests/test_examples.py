"""The examples run, as the README tells users to run them."""

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
