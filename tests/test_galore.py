"""GaLore against unmodified optax.contrib.galore where the registry cannot reach.

The registry's comparisons run on the kit's example tree (through
``optax_galore_with_empty_subtrees``, for its ``None`` entry), where one
``GaLoreDimensionNumbers`` for every leaf of two or more axes cannot fit its
2-d and 4-d leaves at once. Here a tree of 3-d "attention" weights (tall and
wide once reshaped) and a bias runs with one ``GaLoreDimensionNumbers``, with
a tree of them and with a function returning one, against optax itself; what
the drop-in refuses is refused by name.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from optax.contrib import GaLoreDimensionNumbers

import jaxopt_rules as jr
from jaxopt_rules import testing


DIMS = GaLoreDimensionNumbers(reduction_axis=0, output_axis=(1, 2))
# Per leaf: "o" as (2 * 3) x 4, tall; "q" left out.
TREE = {"q": None, "o": GaLoreDimensionNumbers((0, 1), 2), "b": None}


def _params(dtype):
    rng = np.random.default_rng(0)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    # (6, 2, 2) is the tall 6 x 4 matrix; (2, 3, 4) the wide 2 x 12 one.
    return {"q": leaf(6, 2, 2), "o": leaf(2, 3, 4), "b": leaf(4)}


def _grads(params):
    return jax.tree.map(lambda p: jnp.sin(3 * p) + 0.1 * p**2, params)


def _run(tx, params, steps):
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for _ in range(steps):
        updates, state = update(_grads(params), state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return params, state, out


CASES = [
    {"learning_rate": 1e-2, "rank": 2, "update_proj_gap": 3},
    {
        "learning_rate": 1e-2,
        "rank": 1,
        "update_proj_gap": 1,
        "scale": 0.25,
        "weight_decay": 0.1,
        "mask": {"q": True, "o": False, "b": True},
    },
]


@pytest.mark.parametrize(
    "dims", [DIMS, TREE, lambda params: TREE], ids=["one", "tree", "fn"]
)
@pytest.mark.parametrize("case", CASES)
def test_dimension_numbers_follow_optax(case, dims):
    kwargs = {**case, "weight_dimension_numbers": dims}
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        ours, state, _ = _run(jr.galore(**kwargs), params, 30)
        theirs, optax_state, _ = _run(optax.contrib.galore(**kwargs), params, 30)
        assert testing.relative_error(ours, theirs) <= 1e-12
        # The state is optax's: projectors and moments of the reshaped leaves.
        r = case["rank"]
        if dims is DIMS:
            assert state.projector["q"].shape == (6, r)
            assert state.projector["o"].shape == (12, r)
        else:
            assert state.projector["q"].shape == (1, 1)  # (optax: (0, 0))
            assert state.projector["o"].shape == (6, r)
        back = jr.to_optax(state, optax.contrib.galore(**kwargs), ours)
        base = back[0].base_optimizer_state
        assert (
            testing.relative_error(base.mu, optax_state[0].base_optimizer_state.mu)
            <= 1e-12
        )
        assert back[0].projector["b"].shape == (0, 0)


def test_float32_steps_within_a_millionth_of_optax():
    kwargs = {**CASES[0], "weight_dimension_numbers": DIMS}
    params = _params(jnp.float32)
    _, _, ours = _run(jr.galore(**kwargs), params, 10)
    _, _, theirs = _run(optax.contrib.galore(**kwargs), params, 10)
    for a, b in zip(ours, theirs, strict=True):
        assert testing.relative_error(a, b) <= 1e-6


def test_what_the_drop_in_does_not_take_is_refused_by_name():
    with pytest.raises(ValueError, match="base_optimizer must be None"):
        jr.galore(1e-2, base_optimizer=optax.scale_by_lion())
    with pytest.raises(TypeError, match=r"got 0 \(int\) in it"):
        jr.galore(1e-2, weight_dimension_numbers={"q": (0, 1)})
    with pytest.raises(ValueError, match="rank must be positive"):
        jr.galore(1e-2, rank=0)
    bad = GaLoreDimensionNumbers(reduction_axis=0, output_axis=1)
    with pytest.raises(ValueError, match="unassigned"):
        jr.galore(1e-2, weight_dimension_numbers=bad).init(_params(jnp.float32))
