"""Each torch_compat factory against torch.optim: relative error after 100 steps.

Runs every option set of ``jaxopt_rules.torch_compat.REGISTRY`` on the
verification problem of ``tests/torch_problem.py`` (1-d, 2-d and 3-d leaves,
a non-quadratic objective), against the stored torch 2.13 trajectories of
``tests/torch_fixtures.npz``, in float64 and float32, and prints
``max |ours - torch| / max |torch|`` per case and the worst per dtype.

Usage::

    python -m benchmarks.torch_agreement
"""

import importlib.util
import json
import pathlib
from types import ModuleType

import numpy as np

from benchmarks import _table
from jaxopt_rules import torch_compat


TESTS = pathlib.Path(__file__).resolve().parent.parent / "tests"


def load_torch_problem() -> ModuleType:
    """``tests/torch_problem.py`` (the verification problem), imported by path."""
    spec = importlib.util.spec_from_file_location(
        "torch_problem", TESTS / "torch_problem.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    torch_problem = load_torch_problem()
    fixtures = np.load(TESTS / "torch_fixtures.npz")
    meta = json.loads((TESTS / "torch_fixtures.json").read_text())
    worst = {"float64": 0.0, "float32": 0.0}
    print(f"torch {meta['torch']}, {meta['steps']} steps")
    print(_table.markdown_header(["factory", "options", "float64", "float32"], "llrr"))
    for spec in torch_compat.REGISTRY:
        data = torch_problem.problem(meta["seed"], torch_problem.shapes_for(spec))
        for index, kwargs in enumerate(spec.cases):
            errors = {}
            for dtype in worst:
                ours = torch_problem.run_jax(
                    spec.factory, dict(kwargs), data, np.dtype(dtype).type
                )
                key = f"{spec.name}/{index}/{dtype}"
                torch_run = {leaf: fixtures[f"{key}/{leaf}"] for leaf in data["init"]}
                errors[dtype] = torch_problem.relative_error(ours, torch_run)
                if not spec.matrices_only:  # Muon's bfloat16: its own line
                    worst[dtype] = max(worst[dtype], errors[dtype])
            options = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            cells = [f"{errors['float64']:.1e}", f"{errors['float32']:.1e}"]
            print(_table.markdown_row([spec.name, options, *cells]))
    cells = [f"{worst['float64']:.1e}", f"{worst['float32']:.1e}"]
    print(_table.markdown_row(["worst (without muon)", "", *cells]))


if __name__ == "__main__":
    main()
