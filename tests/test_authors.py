"""Catalog rules against their authors' own code, over 100-step trajectories.

Each rule with an ``authors`` reference (``RuleSpec.authors``, and any
``more_authors``) is run on the torch_compat problem with each case pair and
compared with the authors' optimizer's trajectory, stored in
``fixtures/authors.npz`` (written by ``make_authors_fixtures.py``), so no
torch is needed. With torch and the authors' package importable, the
fixtures are recomputed live and checked to be current, and the rule is
compared with a live run on another problem.
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
REFERENCES = {label: (spec, ref) for label, spec, ref in maker.references()}
"""Every authors' code compared with, by label (the rule's name, or
``<name>@<package>`` for its ``more_authors``)."""
CASES = [
    pytest.param(label, index, dtype, id=f"{label}-{index}-{dtype}")
    for label, (_, reference) in REFERENCES.items()
    for index in range(len(reference.cases))
    for dtype in reference.tolerance
]


def _stored(label: str, index: int, dtype: str, evaluated: bool = False):
    key = maker.case_key(label, index, dtype)
    prefix = f"{key}/eval/" if evaluated else f"{key}/"
    return {leaf: FIXTURES[prefix + leaf] for leaf in _shapes(label)}


def _shapes(label: str) -> dict[str, tuple[int, ...]]:
    return tp.shapes_for(REFERENCES[label][1])


def _problem(label: str, seed: int | None = None):
    return tp.problem(META["seed"] if seed is None else seed, _shapes(label))


def test_fixtures_cover_exactly_the_registered_cases():
    assert set(META["cases"]) == set(REFERENCES), (
        "regenerate: python tests/make_authors_fixtures.py"
    )
    for label, (_, reference) in REFERENCES.items():
        assert META["cases"][label] == maker.describe(reference), label
        assert META["requirements"][label] == reference.requirement, label


@pytest.mark.parametrize(("label", "index", "dtype"), CASES)
def test_trajectory_matches_the_authors_code(label, index, dtype):
    spec, reference = REFERENCES[label]
    ours_kwargs, _ = reference.cases[index]
    data = _problem(label)
    probe = tp.probe_for(reference, ours_kwargs, spec.factory)
    ours = tp.run_jax(
        spec.factory, dict(ours_kwargs), data, np.dtype(dtype).type, probe=probe
    )
    expected = _stored(label, index, dtype)
    assert tp.relative_error(expected, data["init"]) > 1e-3  # the run moved
    assert tp.relative_error(ours, expected) <= reference.tolerance[dtype]


SCHEDULE_FREE = [n for n in REFERENCES if n.startswith("schedule_free")]


@pytest.mark.parametrize("name", SCHEDULE_FREE)
@pytest.mark.parametrize("index", range(3))
def test_eval_params_match_the_authors_eval_mode(name, index):
    spec, reference = REFERENCES[name]
    ours_kwargs, _ = reference.cases[index]
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
    expected = _stored(name, index, "float64", evaluated=True)
    trained = _stored(name, index, "float64")
    assert tp.relative_error(expected, trained) > 1e-4  # x is not y
    assert tp.relative_error(ours, expected) <= 1e-10


def test_the_authors_options_matter():
    # optax's conventions (a warm-up from 0; Prodigy's bias correction) leave
    # the authors' numbers by far more than the tolerance: the options are
    # what reproduces them.
    data = tp.problem(META["seed"])
    sf, reference = REFERENCES["schedule_free_adamw"]
    kwargs = {**reference.cases[1][0], "warmup_from_zero": True}
    ours = tp.run_jax(sf.factory, kwargs, data, np.float64)
    assert tp.relative_error(ours, _stored("schedule_free_adamw", 1, "float64")) > 1e-4
    prodigy, _ = REFERENCES["prodigy"]
    ours = tp.run_jax(prodigy.factory, {}, data, np.float64)
    assert tp.relative_error(ours, _stored("prodigy", 0, "float64")) > 1e-4


@pytest.mark.parametrize("option", ["merge_dims", "precondition_damped_momentum"])
def test_kron_torchs_options_matter(option):
    # Each of the two options that give kron-torch's numbers moves the run by
    # far more than the comparison's tolerance when left out.
    label = "psgd_kron@kron-torch"
    spec, reference = REFERENCES[label]
    kwargs = {**reference.cases[0][0], option: False}
    ours = tp.run_jax(spec.factory, kwargs, _problem(label), np.float64)
    error = tp.relative_error(ours, _stored(label, 0, "float64"))
    assert error > 100 * reference.tolerance["float64"]


def _installed(reference: jr.AuthorsReference) -> bool:
    module = reference.optimizer.partition(".")[0]
    needs = (module,) if reference.framework == "jax" else ("torch", module)
    return all(importlib.util.find_spec(m) for m in needs)


@pytest.mark.parametrize("label", sorted(REFERENCES))
def test_fixtures_are_current_and_live_runs_agree(label):
    spec, reference = REFERENCES[label]
    if not _installed(reference):
        pytest.skip(f"needs torch and {reference.requirement}")
    data = _problem(label)
    other = _problem(label, 7)
    for index, (ours_kwargs, theirs) in enumerate(reference.cases):
        probe = tp.probe_for(reference, ours_kwargs, spec.factory)
        live = tp.run_reference(reference, theirs, data, np.float64, probe=probe)
        assert tp.relative_error(live, _stored(label, index, "float64")) == 0.0
        theirs_other = tp.run_reference(
            reference, theirs, other, np.float64, probe=probe
        )
        ours_other = tp.run_jax(
            spec.factory, dict(ours_kwargs), other, np.float64, probe=probe
        )
        error = tp.relative_error(ours_other, theirs_other)
        assert error <= reference.tolerance["float64"], (index, error)
