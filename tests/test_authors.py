"""Catalog rules against their authors' own code, over 100-step trajectories.

Each rule with an ``authors`` reference (``RuleSpec.authors``) is run on the
torch_compat problem with each case pair and compared with the authors'
PyTorch optimizer's trajectory, stored in ``fixtures/authors.npz`` (written
by ``make_authors_fixtures.py``), so no torch is needed. With torch and the
authors' package importable, the fixtures are recomputed live and checked to
be current, and the rule is compared with a live run on another problem.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch_problem as tp

import jaxopt_rules as jr
from tests import make_authors_fixtures as maker


FIXTURES = np.load(maker.FIXTURES / "authors.npz")
META = json.loads((maker.FIXTURES / "authors.json").read_text())
SPECS = {spec.name: spec for spec in jr.REGISTRY if spec.authors is not None}
CASES = [
    pytest.param(spec, index, dtype, id=f"{spec.name}-{index}-{dtype}")
    for spec in SPECS.values()
    for index in range(len(spec.authors.cases))  # pyright: ignore[reportOptionalMemberAccess]
    for dtype in spec.authors.tolerance  # pyright: ignore[reportOptionalMemberAccess]
]


def _reference(spec: jr.RuleSpec) -> jr.AuthorsReference:
    assert spec.authors is not None
    return spec.authors


def _stored(spec: jr.RuleSpec, index: int, dtype: str, evaluated: bool = False):
    key = maker.case_key(spec.name, index, dtype)
    prefix = f"{key}/eval/" if evaluated else f"{key}/"
    return {leaf: FIXTURES[prefix + leaf] for leaf in _shapes(spec)}


def _shapes(spec: jr.RuleSpec) -> dict[str, tuple[int, ...]]:
    return tp.shapes_for(_reference(spec))


def _problem(spec: jr.RuleSpec, seed: int | None = None):
    return tp.problem(META["seed"] if seed is None else seed, _shapes(spec))


def test_fixtures_cover_exactly_the_registered_cases():
    assert set(META["cases"]) == set(SPECS), (
        "regenerate: python tests/make_authors_fixtures.py"
    )
    for name, spec in SPECS.items():
        assert META["cases"][name] == maker.describe(_reference(spec)), name
        assert META["requirements"][name] == _reference(spec).requirement, name


@pytest.mark.parametrize(("spec", "index", "dtype"), CASES)
def test_trajectory_matches_the_authors_code(spec, index, dtype):
    ours_kwargs, _ = _reference(spec).cases[index]
    data = _problem(spec)
    probe = tp.probe_for(_reference(spec), ours_kwargs, spec.factory)
    ours = tp.run_jax(
        spec.factory, dict(ours_kwargs), data, np.dtype(dtype).type, probe=probe
    )
    expected = _stored(spec, index, dtype)
    assert tp.relative_error(expected, data["init"]) > 1e-3  # the run moved
    assert tp.relative_error(ours, expected) <= _reference(spec).tolerance[dtype]


SCHEDULE_FREE = [n for n in SPECS if n.startswith("schedule_free")]


@pytest.mark.parametrize("name", SCHEDULE_FREE)
@pytest.mark.parametrize("index", range(3))
def test_eval_params_match_the_authors_eval_mode(name, index):
    spec = SPECS[name]
    ours_kwargs, _ = _reference(spec).cases[index]
    data = tp.problem(META["seed"])
    b1 = ours_kwargs.get("b1", 0.9)
    ours = tp.run_jax(
        spec.factory,
        dict(ours_kwargs),
        data,
        np.float64,
        evaluate=lambda state, params: jr.schedule_free_eval_params(
            state, params, b1=b1
        ),
    )
    expected = _stored(spec, index, "float64", evaluated=True)
    trained = _stored(spec, index, "float64")
    assert tp.relative_error(expected, trained) > 1e-4  # x is not y
    assert tp.relative_error(ours, expected) <= 1e-10


def test_the_authors_options_matter():
    # optax's conventions (a warm-up from 0; Prodigy's bias correction) leave
    # the authors' numbers by far more than the tolerance: the options are
    # what reproduces them.
    data = tp.problem(META["seed"])
    sf = SPECS["schedule_free_adamw"]
    kwargs = {**_reference(sf).cases[1][0], "warmup_from_zero": True}
    ours = tp.run_jax(sf.factory, kwargs, data, np.float64)
    assert tp.relative_error(ours, _stored(sf, 1, "float64")) > 1e-4
    prodigy = SPECS["prodigy"]
    ours = tp.run_jax(prodigy.factory, {}, data, np.float64)
    assert tp.relative_error(ours, _stored(prodigy, 0, "float64")) > 1e-4


def _installed(reference: jr.AuthorsReference) -> bool:
    module = reference.optimizer.partition(".")[0]
    needs = (module,) if reference.framework == "jax" else ("torch", module)
    return all(importlib.util.find_spec(m) for m in needs)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fixtures_are_current_and_live_runs_agree(name):
    spec = SPECS[name]
    reference = _reference(spec)
    if not _installed(reference):
        pytest.skip(f"needs torch and {reference.requirement}")
    data = _problem(spec)
    other = _problem(spec, 7)
    for index, (ours_kwargs, theirs) in enumerate(reference.cases):
        probe = tp.probe_for(reference, ours_kwargs, spec.factory)
        live = tp.run_reference(reference, theirs, data, np.float64, probe=probe)
        assert tp.relative_error(live, _stored(spec, index, "float64")) == 0.0
        theirs_other = tp.run_reference(
            reference, theirs, other, np.float64, probe=probe
        )
        ours_other = tp.run_jax(
            spec.factory, dict(ours_kwargs), other, np.float64, probe=probe
        )
        error = tp.relative_error(ours_other, theirs_other)
        assert error <= reference.tolerance["float64"], (index, error)
