"""Regenerates tests/fixtures/authors.npz: the authors' code's trajectories.

For every catalog rule with an ``authors`` reference and every case pair in
it, runs the authors' PyTorch optimizer (CPU) in float64 and float32 on the
problem of ``torch_problem.py`` and stores the final parameters (and, for
optimizers with an eval mode, the parameters in eval mode). The tests compare
against these files, so they need neither torch nor the authors' packages.
Needs torch 2.13.0 (CPU) and each ``requirement``: the ``references``
extra, and timm without its dependencies (its torchvision requirement would
bring a CUDA build of torch; the runner imports timm's optimizer modules
without timm's ``__init__``)::

    pip install -e ".[references]"
    pip install --no-deps timm==1.0.31
    python tests/make_authors_fixtures.py
"""

import functools
import importlib.metadata
import json
import pathlib
import sys

import numpy as np

import jaxopt_rules as jr


sys.path.insert(0, str(pathlib.Path(__file__).parent))
import torch_problem


HERE = pathlib.Path(__file__).parent
FIXTURES = HERE / "fixtures"
SEED = 0


def case_key(spec_name: str, index: int, dtype: str) -> str:
    return f"{spec_name}/{index}/{dtype}"


def _stable(value: object) -> object:
    """``value``, with functions named instead of shown at their address."""
    if isinstance(value, functools.partial):
        return (value.func.__qualname__, value.args, sorted(value.keywords.items()))
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    return value


def describe(reference: jr.AuthorsReference) -> list[str]:
    """The stored cases, for the test that the fixtures are current."""
    return [
        repr(
            (
                sorted((k, _stable(v)) for k, v in ours.items()),
                sorted((k, _stable(v)) for k, v in theirs.items()),
            )
        )
        for ours, theirs in reference.cases
    ]


def main() -> None:
    import torch

    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {"torch": torch.__version__, "seed": SEED}
    cases: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    for spec in jr.REGISTRY:
        reference = spec.authors
        if reference is None:
            continue
        package = reference.requirement.partition("==")[0]
        installed = importlib.metadata.version(package)
        if installed != reference.requirement.partition("==")[2]:
            raise SystemExit(f"{spec.name}: needs {reference.requirement}, {installed}")
        versions[spec.name] = reference.requirement
        cases[spec.name] = describe(reference)
        data = torch_problem.problem(SEED, torch_problem.shapes_for(reference))
        evaluates = torch_problem.evaluates(reference)
        for index, (ours, theirs) in enumerate(reference.cases):
            probe = torch_problem.probe_for(reference, ours, spec.factory)
            for dtype in reference.tolerance:
                key = case_key(spec.name, index, dtype)
                for evaluate in (False, True) if evaluates else (False,):
                    final = torch_problem.run_reference(
                        reference,
                        dict(theirs),
                        data,
                        np.dtype(dtype),
                        evaluate,
                        probe=probe,
                    )
                    for leaf, value in final.items():
                        arrays[f"{key}/{'eval/' if evaluate else ''}{leaf}"] = value
        print(f"{spec.name}: {len(reference.cases)} cases", file=sys.stderr)
    meta.update(requirements=versions, cases=cases)
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "authors.npz", **arrays)
    (FIXTURES / "authors.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
