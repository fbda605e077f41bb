"""Regenerates tests/torch_fixtures.npz: torch's 100-step trajectories.

For every entry of ``jaxopt_rules.torch_compat.REGISTRY`` and every option
set in its ``cases``, runs ``torch.optim.<class>`` (CPU, ``foreach=False``)
in float64 and float32 on the problem of ``torch_problem.py`` and stores the
final parameters. The tests compare against these files, so they need no
torch at run time. Needs torch 2.13.0 (CPU)::

    pip install torch==2.13.0
    python tests/make_torch_fixtures.py
"""

import json
import pathlib
import sys

import numpy as np

from jaxopt_rules import torch_compat


sys.path.insert(0, str(pathlib.Path(__file__).parent))
import torch_problem


HERE = pathlib.Path(__file__).parent
SEED = 0


def case_key(spec_name: str, index: int, dtype: str) -> str:
    return f"{spec_name}/{index}/{dtype}"


def main() -> None:
    import torch

    arrays: dict[str, np.ndarray] = {}
    cases: dict[str, list[str]] = {}
    for spec in torch_compat.REGISTRY:
        cases[spec.name] = [repr(sorted(c.items())) for c in spec.cases]
        data = torch_problem.problem(SEED, torch_problem.shapes_for(spec))
        for index, kwargs in enumerate(spec.cases):
            for dtype in (np.float64, np.float32):
                final = torch_problem.run_torch(
                    spec.torch_class, dict(kwargs), data, dtype
                )
                key = case_key(spec.name, index, np.dtype(dtype).name)
                for leaf, value in final.items():
                    arrays[f"{key}/{leaf}"] = value
        print(f"{spec.name}: {len(spec.cases)} cases", file=sys.stderr)
    np.savez_compressed(HERE / "torch_fixtures.npz", **arrays)
    meta = {
        "torch": torch.__version__,
        "seed": SEED,
        "steps": torch_problem.STEPS,
        "cases": cases,
    }
    (HERE / "torch_fixtures.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
