"""Each catalog rule against its authors' code: relative error after 100 steps.

Runs every case pair of each ``RuleSpec.authors`` and ``more_authors``
(``jaxopt_rules.REGISTRY``) on the verification problem of
``tests/torch_problem.py``, against the stored trajectories of the authors'
optimizers (``tests/fixtures/authors.npz``, written by
``tests/make_authors_fixtures.py``), in each dtype the entry states a
tolerance for, and prints ``max |ours - theirs| / max |theirs|`` per case,
the tolerance, and the worst per reference.

Usage::

    python -m benchmarks.authors_agreement
"""

import json

import numpy as np

import jaxopt_rules as jr
from benchmarks import _table
from benchmarks.torch_agreement import TESTS, load_torch_problem


def main() -> None:
    torch_problem = load_torch_problem()
    fixtures = np.load(TESTS / "fixtures" / "authors.npz")
    meta = json.loads((TESTS / "fixtures" / "authors.json").read_text())
    print(f"torch {meta['torch']}, {torch_problem.STEPS} steps")
    columns = ["rule", "authors' code", "case", "float64", "float32"]
    print(_table.markdown_header(columns, "lllrr"))
    pairs = [(s, pair) for s in jr.REGISTRY for pair in s.authors_references]
    for spec, (label, reference) in pairs:
        worst: dict[str, float] = {}
        data = torch_problem.problem(meta["seed"], torch_problem.shapes_for(reference))
        for index, (ours, _) in enumerate(reference.cases):
            cells = []
            for dtype in ("float64", "float32"):
                if dtype not in reference.tolerance:
                    cells.append("-")
                    continue
                probe = torch_problem.probe_for(reference, ours, spec.factory)
                run = torch_problem.run_jax(
                    spec.factory, dict(ours), data, np.dtype(dtype).type, probe=probe
                )
                key = f"{label}/{index}/{dtype}"
                theirs = {leaf: fixtures[f"{key}/{leaf}"] for leaf in data["init"]}
                error = torch_problem.relative_error(run, theirs)
                worst[dtype] = max(worst.get(dtype, 0.0), error)
                cells.append(f"{error:.1e}")
            print(_table.markdown_row([label, "", str(index), *cells]))
        cells = [
            f"{worst[d]:.1e} (<= {reference.tolerance[d]:.0e})" if d in worst else "-"
            for d in ("float64", "float32")
        ]
        name = f"{reference.optimizer} ({reference.requirement})"
        print(_table.markdown_row([f"**{label}**", name, "worst", *cells]))


if __name__ == "__main__":
    main()
