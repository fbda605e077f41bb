"""torch_compat: every factory against torch.optim, over 100-step trajectories.

Without torch, each registered option set is compared with the stored torch
trajectories (``torch_fixtures.npz``, written by ``make_torch_fixtures.py``
with torch 2.13.0 on CPU). With torch importable, the same comparison also
runs live on fresh random problems and hyperparameters, and each factory's
signature is compared with the torch class's.
"""

import inspect
import json
import pathlib
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch_problem as tp

from jaxopt_rules import torch_compat


HERE = pathlib.Path(__file__).parent
FIXTURES = np.load(HERE / "torch_fixtures.npz")
META = json.loads((HERE / "torch_fixtures.json").read_text())
# Relative to the largest parameter, after 100 steps: the targets,
# 1e-10 in float64 and 1e-5 in float32, except where a spec states its own
# (Muon's bfloat16 iteration).
SPECS = {spec.name: spec for spec in torch_compat.REGISTRY}
CASES = [
    pytest.param(spec, index, dtype, id=f"{spec.name}-{index}-{dtype}")
    for spec in torch_compat.REGISTRY
    for index in range(len(spec.cases))
    for dtype in ("float64", "float32")
]


def test_fixtures_cover_exactly_the_registered_cases():
    stored = META["cases"]
    assert set(stored) == set(SPECS), "regenerate: python tests/make_torch_fixtures.py"
    for name, spec in SPECS.items():
        cases = [repr(sorted(c.items())) for c in spec.cases]
        assert stored[name] == cases, f"{name}: cases changed; regenerate them"


@pytest.mark.parametrize(("spec", "index", "dtype"), CASES)
def test_trajectory_matches_torch(spec, index, dtype):
    data = tp.problem(META["seed"], tp.shapes_for(spec))
    ours = tp.run_jax(spec.factory, dict(spec.cases[index]), data, np.dtype(dtype).type)
    key = f"{spec.name}/{index}/{dtype}"
    expected = {leaf: FIXTURES[f"{key}/{leaf}"] for leaf in data["init"]}
    # The run moved: the comparison is not between two unchanged starts.
    assert tp.relative_error(expected, data["init"]) > 1e-3
    assert tp.relative_error(ours, expected) <= spec.tolerance[dtype]


def _u(rng, low, high):
    return float(rng.uniform(low, high))


def _log_u(rng, low, high):
    return float(10 ** rng.uniform(np.log10(low), np.log10(high)))


def _betas(rng):
    return (_u(rng, 0.8, 0.95), _u(rng, 0.99, 0.999))


def _flip(rng):
    return bool(rng.integers(2))


def _sgd(rng):
    momentum = _u(rng, 0.5, 0.95) if _flip(rng) else 0.0
    nesterov = momentum > 0 and _flip(rng)
    return {
        "lr": _u(rng, 1e-3, 2e-2),
        "momentum": momentum,
        "dampening": 0.0 if nesterov else _u(rng, 0.0, 0.5),
        "nesterov": nesterov,
        "weight_decay": _u(rng, 0.0, 0.05),
        "maximize": _flip(rng),
    }


def _adam_like(decoupled):
    def sample(rng):
        kwargs = {
            "lr": _u(rng, 1e-3, 2e-2),
            "betas": _betas(rng),
            "eps": _log_u(rng, 1e-8, 1e-5),
            "weight_decay": _u(rng, 0.0, 0.1),
            "amsgrad": _flip(rng),
            "maximize": _flip(rng),
        }
        if decoupled:
            kwargs["decoupled_weight_decay"] = _flip(rng)
        return kwargs

    return sample


SAMPLERS = {
    "sgd": _sgd,
    "adam": _adam_like(decoupled=True),
    "adamw": _adam_like(decoupled=False),
    "adagrad": lambda rng: {
        "lr": _u(rng, 0.01, 0.2),
        "lr_decay": _u(rng, 0.0, 0.05),
        "weight_decay": _u(rng, 0.0, 0.05),
        "initial_accumulator_value": _u(rng, 0.0, 0.5),
        "eps": _log_u(rng, 1e-10, 1e-6),
        "maximize": _flip(rng),
    },
    "adadelta": lambda rng: {
        "lr": _u(rng, 0.2, 0.6),
        "rho": _u(rng, 0.9, 0.95),
        "eps": _log_u(rng, 1e-6, 1e-4),
        "weight_decay": _u(rng, 0.0, 0.05),
        "maximize": _flip(rng),
    },
    "adamax": lambda rng: {
        "lr": _u(rng, 1e-3, 2e-2),
        "betas": _betas(rng),
        "eps": _log_u(rng, 1e-8, 1e-5),
        "weight_decay": _u(rng, 0.0, 0.05),
        "maximize": _flip(rng),
    },
    "nadam": lambda rng: {
        "lr": _u(rng, 1e-3, 2e-2),
        "betas": _betas(rng),
        "eps": _log_u(rng, 1e-8, 1e-5),
        "weight_decay": _u(rng, 0.0, 0.05),
        "momentum_decay": _u(rng, 1e-3, 1e-2),
        "decoupled_weight_decay": _flip(rng),
        "maximize": _flip(rng),
    },
    "radam": lambda rng: {
        "lr": _u(rng, 1e-3, 2e-2),
        "betas": _betas(rng),
        "eps": _log_u(rng, 1e-8, 1e-5),
        "weight_decay": _u(rng, 0.0, 0.05),
        "decoupled_weight_decay": _flip(rng),
        "maximize": _flip(rng),
    },
    "rmsprop": lambda rng: {
        "lr": _u(rng, 1e-4, 2e-3),
        "alpha": _u(rng, 0.95, 0.999),
        "eps": _log_u(rng, 1e-8, 1e-5),
        "weight_decay": _u(rng, 0.0, 0.05),
        "momentum": _u(rng, 0.5, 0.9) if _flip(rng) else 0.0,
        "centered": _flip(rng),
        "maximize": _flip(rng),
    },
    "rprop": lambda rng: {
        "lr": _u(rng, 1e-3, 1e-2),
        "etas": (_u(rng, 0.3, 0.6), _u(rng, 1.1, 1.5)),
        "step_sizes": (_log_u(rng, 1e-6, 1e-4), _u(rng, 0.1, 1.0)),
        "maximize": _flip(rng),
    },
    "adafactor": lambda rng: {
        "lr": _u(rng, 5e-3, 1e-2),
        "beta2_decay": _u(rng, -0.95, -0.75),
        "eps": (None if _flip(rng) else _log_u(rng, 1e-8, 1e-5), _u(rng, 1e-3, 1e-2)),
        "d": _u(rng, 1.0, 3.0),
        "weight_decay": _u(rng, 0.0, 0.1),
        "maximize": _flip(rng),
    },
    "muon": lambda rng: {
        "lr": _u(rng, 5e-3, 2e-2),
        "weight_decay": _u(rng, 0.0, 0.1),
        "momentum": _u(rng, 0.85, 0.95),
        "nesterov": _flip(rng),
        "eps": _log_u(rng, 1e-8, 1e-5),
        "ns_steps": int(rng.integers(3, 6)),
        "adjust_lr_fn": [None, "original", "match_rms_adamw"][int(rng.integers(3))],
    },
    "asgd": lambda rng: {
        "lr": _u(rng, 1e-3, 2e-2),
        "lambd": _log_u(rng, 1e-4, 1e-2),
        "alpha": _u(rng, 0.5, 0.9),
        "t0": float(rng.choice([10.0, 50.0, 1e6])),
        "weight_decay": _u(rng, 0.0, 0.05),
        "maximize": _flip(rng),
    },
}


def test_every_factory_has_a_random_sampler():
    assert set(SAMPLERS) == set(SPECS)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("spec", torch_compat.REGISTRY, ids=lambda s: s.name)
def test_matches_live_torch_on_random_problems(spec, seed):
    pytest.importorskip("torch")
    rng = np.random.default_rng([seed, *map(ord, spec.name)])
    kwargs = SAMPLERS[spec.name](rng)
    data = tp.problem(100 + seed, tp.shapes_for(spec))
    # A sample on which torch cannot reproduce itself to the tolerance (its
    # float64 run moves more when the start moves by an ulp, or its float32
    # run strays that far from its float64 run) verifies nothing: such a
    # sample is a bug of the sampler, not a pass.
    reference = tp.run_torch(spec.torch_class, dict(kwargs), data, np.float64)
    nudged = {**data, "init": {n: v * (1 + 1e-15) for n, v in data["init"].items()}}
    moved = tp.run_torch(spec.torch_class, dict(kwargs), nudged, np.float64)
    single = tp.run_torch(spec.torch_class, dict(kwargs), data, np.float32)
    assert tp.relative_error(moved, reference) <= spec.tolerance["float64"], kwargs
    assert tp.relative_error(single, reference) <= spec.tolerance["float32"], kwargs
    for dtype in (np.float64, np.float32):
        ours = tp.run_jax(spec.factory, dict(kwargs), data, dtype)
        theirs = tp.run_torch(spec.torch_class, dict(kwargs), data, dtype)
        error = tp.relative_error(ours, theirs)
        assert error <= spec.tolerance[np.dtype(dtype).name], (kwargs, dtype, error)


@pytest.mark.parametrize("spec", torch_compat.REGISTRY, ids=lambda s: s.name)
def test_signature_is_torchs(spec):
    torch = pytest.importorskip("torch")
    theirs = inspect.signature(getattr(torch.optim, spec.torch_class).__init__)
    theirs = [p for p in theirs.parameters.values() if p.name not in ("self", "params")]
    ours = inspect.signature(spec.factory).parameters
    assert [p.name for p in theirs] == list(ours)
    for p in theirs:
        assert ours[p.name].kind == p.kind, p.name
        assert ours[p.name].default == p.default, p.name


@pytest.mark.parametrize("spec", torch_compat.REGISTRY, ids=lambda s: s.name)
def test_docstring_sections(spec):
    doc = inspect.getdoc(spec.factory) or ""
    assert re.search(r"^Update\b.*::$", doc, re.MULTILINE), f"{spec.name}: Update::"
    for section in ("Args:", "Returns:", "Example:", "References:"):
        assert section in doc, f"{spec.name} docstring lacks {section}"
    assert f"Verified against ``torch.optim.{spec.torch_class}``" in " ".join(
        doc.split()
    )
    documented = doc.split("Args:")[1].split("Returns:")[0]
    for name in inspect.signature(spec.factory).parameters:
        assert f"{name}:" in documented, f"{spec.name}: argument {name} undocumented"


def test_execution_flags_are_accepted_and_change_nothing():
    params = {"w": jnp.array([1.0, -2.0])}
    plain = torch_compat.adam(lr=0.1)
    flagged = torch_compat.adam(
        lr=0.1, foreach=True, fused=False, capturable=True, differentiable=True
    )
    a, _ = plain.update(params, plain.init(params), params)
    b, _ = flagged.update(params, flagged.init(params), params)
    np.testing.assert_array_equal(a["w"], b["w"])
    with pytest.raises(TypeError, match="fused must be None or a bool"):
        torch_compat.adam(fused="yes")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        torch_compat.sgd(lr=0.1, momentum=0.9, nesterov=True, dampening=0.1)
    with pytest.raises(ValueError, match="lr"):
        torch_compat.adam(lr=-1.0)
    with pytest.raises(ValueError, match="betas must be a pair"):
        torch_compat.adam(betas=0.9)
    with pytest.raises(ValueError, match="beta2"):
        torch_compat.nadam(betas=(0.9, 1.5))


def test_asgd_average_is_in_the_state():
    tx = torch_compat.asgd(lr=0.1, lambd=0.0, t0=0)
    params = {"w": jnp.array([1.0])}
    state = tx.init(params)
    iterates = []
    for _ in range(3):
        updates, state = tx.update(params, state, params)  # gradient = params
        params = optax.apply_updates(params, updates)
        iterates.append(float(params["w"][0]))
    # t0 = 0: mu_t = 1 / max(1, t - 1), so ax restarts at step 2 and then
    # averages: the mean of the iterates from step 2 on.
    np.testing.assert_allclose(
        float(state.ax["w"][0]), np.mean(iterates[1:]), rtol=1e-6
    )


def test_readme_porting_example_gives_torchs_numbers():
    pytest.importorskip("torch")
    readme = (HERE.parent / "docs" / "torch-compat.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if "torch_compat.adamw" in b]
    namespace: dict = {}
    exec(
        compile(block.replace("print(", "(lambda *a: None)("), "README", "exec"),
        namespace,
    )
    ours, theirs = np.asarray(namespace["params"]), namespace["w"].numpy()
    assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()
    assert np.abs(theirs - namespace["w0"]).max() > 1e-3  # it moved
