"""Regenerates tests/fixtures/authors.npz: the authors' code's trajectories.

For every catalog rule with an ``authors`` reference and every case pair in
it, runs the authors' PyTorch optimizer (CPU) in float64 and float32 on the
problem of ``torch_problem.py`` and stores the final parameters (and, for
optimizers with an eval mode, the parameters in eval mode). The tests compare
against these files, so they need neither torch nor the authors' packages.
Needs torch 2.13.0 (CPU) and each ``requirement``: the ``references``
extra, and timm and kron-torch without their dependencies (timm's
torchvision requirement, kron-torch's triton, would bring CUDA builds; the
runner imports timm's optimizer modules without timm's ``__init__``, and
kron-torch's optimizer needs neither triton nor opt-einsum)::

    pip install -e ".[references]"
    pip install --no-deps timm==1.0.31 kron-torch==0.3.3
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


def case_key(label: str, index: int, dtype: str) -> str:
    return f"{label}/{index}/{dtype}"


def references() -> list[tuple[str, jr.RuleSpec, jr.AuthorsReference]]:
    """``(label, spec, reference)`` for every authors' code a rule is compared with.

    The label is the rule's name for its ``authors``, and
    ``<name>@<package>`` for each of its ``more_authors``.
    """
    return [
        (label, spec, reference)
        for spec in jr.REGISTRY
        for label, reference in spec.authors_references
    ]


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
    for label, spec, reference in references():
        installed = importlib.metadata.version(reference.package)
        if installed != reference.requirement.partition("==")[2]:
            raise SystemExit(f"{label}: needs {reference.requirement}, {installed}")
        versions[label] = reference.requirement
        cases[label] = describe(reference)
        data = torch_problem.problem(SEED, torch_problem.shapes_for(reference))
        evaluates = torch_problem.evaluates(reference)
        for index, (ours, theirs) in enumerate(reference.cases):
            probe = torch_problem.probe_for(reference, ours, spec.factory)
            for dtype in reference.tolerance:
                key = case_key(label, index, dtype)
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
        print(f"{label}: {len(reference.cases)} cases", file=sys.stderr)
    meta.update(requirements=versions, cases=cases)
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "authors.npz", **arrays)
    (FIXTURES / "authors.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
