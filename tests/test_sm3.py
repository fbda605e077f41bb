"""SM3 against optax.sm3 itself, whose state keeps a list of accumulators per leaf.

The registry's comparisons run on the kit's example tree, whose scalar leaf
optax 0.2.8's SM3 cannot update (its accumulator list is empty: IndexError);
there the reference is ``optax_sm3_on_vectors`` (scalars viewed as 1-element
vectors). Here SM3 is compared with unmodified ``optax.sm3`` on the same tree
without the scalar. Its state is optax's with each leaf's per-axis
accumulators end to end in one vector.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_rules import testing
from jaxopt_rules.rules._sm3 import sm3


CASES = [{"learning_rate": 1e-2}, {"learning_rate": 1e-2, "momentum": 0.5}]


def _params(dtype):
    params = testing.example_params(dtype)
    del params["scale"]
    return params


def _concatenated(optax_mu, params):
    """optax's per-leaf lists of per-axis accumulators, end to end."""
    treedef = jax.tree.structure(params)
    lists = treedef.flatten_up_to(optax_mu)
    return treedef.unflatten([jnp.concatenate(axes) for axes in lists])


@pytest.mark.parametrize("case", CASES)
def test_float32_steps_match_optax(case):
    kwargs = {k: np.float32(v) for k, v in case.items()}
    ours, ref = sm3(**kwargs), optax.sm3(**kwargs)
    params = _params(jnp.float32)
    ref_state = ref.init(params)
    state = ours.init(params)
    worst = {"updates": 0.0, "mu": 0.0, "nu": 0.0}
    for step in range(100):
        grads = testing.example_grads(params)
        forced = state._replace(
            count=jnp.asarray(step, jnp.int32),
            mu=_concatenated(ref_state[0].mu, params),
            nu=ref_state[0].nu,
        )
        updates, state = jax.jit(ours.update)(grads, forced)
        expected, ref_state = jax.jit(ref.update)(grads, ref_state)
        worst["updates"] = max(
            worst["updates"], testing.relative_error(updates, expected)
        )
        worst["mu"] = max(
            worst["mu"],
            testing.relative_error(state.mu, _concatenated(ref_state[0].mu, params)),
        )
        worst["nu"] = max(
            worst["nu"], testing.relative_error(state.nu, ref_state[0].nu)
        )
        params = optax.apply_updates(params, expected)
    assert max(worst.values()) <= 1e-6, worst


@pytest.mark.parametrize("case", CASES)
def test_float64_trajectory_matches_optax(case):
    with jax.enable_x64(True):
        kwargs = {k: np.float64(v) for k, v in case.items()}
        finals = []
        for tx in (sm3(**kwargs), optax.sm3(**kwargs)):
            params = _params(jnp.float64)
            state = tx.init(params)
            step = jax.jit(tx.update)
            for _ in range(100):
                updates, state = step(testing.example_grads(params), state)
                params = optax.apply_updates(params, updates)
            finals.append(params)
        assert testing.relative_error(*finals) <= 1e-12


def test_state_holds_one_accumulator_per_axis_index():
    params = {"w": jnp.zeros((2, 3, 4)), "b": jnp.zeros(5), "s": jnp.zeros(())}
    state = sm3(0.1).init(params)
    shapes = jax.tree.map(jnp.shape, state.mu)
    assert shapes == {"w": (9,), "b": (5,), "s": ()}
    g = jnp.arange(24.0).reshape(2, 3, 4)
    _, state = sm3(0.1).update({"w": g, "b": jnp.ones(5), "s": jnp.array(2.0)}, state)
    sq = np.asarray(g) ** 2
    expected = np.concatenate(
        [sq.max(axis=(1, 2)), sq.max(axis=(0, 2)), sq.max(axis=(0, 1))]
    )
    np.testing.assert_array_equal(state.mu["w"], expected)
    np.testing.assert_array_equal(state.mu["b"], np.ones(5))


def test_scalar_leaves_are_adagrad():
    """A scalar keeps one accumulator (optax 0.2.8 raises IndexError there)."""
    tx = sm3(0.5, momentum=0.0)
    params = {"s": jnp.array(1.0)}
    state = tx.init(params)
    total = 0.0
    for g in (3.0, -4.0, 1.0):
        updates, state = tx.update({"s": jnp.array(g)}, state)
        total += g * g
        np.testing.assert_allclose(updates["s"], -0.5 * g / np.sqrt(total + 1e-8))
    with pytest.raises(IndexError):
        optax.sm3(0.5).update(params, optax.sm3(0.5).init(params))


def test_a_leaf_with_an_empty_axis_is_updated():
    # A (3, 0) leaf: its rows' maxima are over no element (0, the squares'
    # floor), its columns' over three; the other leaf is unaffected.
    params = {"empty": jnp.zeros((3, 0)), "w": jnp.ones((2, 4))}
    tx = sm3(1.0)
    updates, state = jax.jit(tx.update)(params, tx.init(params), params)
    alone, _ = tx.update({"w": params["w"]}, tx.init({"w": params["w"]}))
    assert updates["empty"].shape == (3, 0)
    np.testing.assert_array_equal(updates["w"], alone["w"])
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
