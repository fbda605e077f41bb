"""flat_leaves: the flat-buffer layout gives the per-leaf results, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing


# Rules that treat every element independently (LAMB's per-leaf trust ratio
# and normalized_sgd's global norm are not elementwise).
ELEMENTWISE = [s for s in jr.REGISTRY if s.name not in {"lamb", "normalized_sgd"}]


def _mixed_params():
    params = testing.example_params()
    params["half"] = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.bfloat16).reshape(3, 4)
    return params


def _run(tx, params, steps=5):
    state = tx.init(params)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
            *tx.update(g, s, p)
        )
    )
    for k in range(steps):
        grads = jax.tree.map(
            lambda p, k=k: jnp.cos(p * (k + 1)).astype(p.dtype), params
        )
        params, state = step(params, state, grads)
    return params, state


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: s.name)
def test_same_numbers_as_per_leaf(spec):
    params = _mixed_params()
    expected, leaf_state = _run(spec.factory(**spec.hyperparams), params)
    actual, flat_state = _run(jr.flat_leaves(spec.factory(**spec.hyperparams)), params)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(
            np.asarray(a, np.float32), np.asarray(e, np.float32)
        )
    assert jr.tree_bytes(flat_state) == jr.tree_bytes(leaf_state)


def test_one_buffer_per_dtype():
    tx = jr.flat_leaves(jr.adam(1e-3))
    state = tx.init(_mixed_params())
    assert set(state.inner.mu) == {"float32", "bfloat16"}
    assert state.inner.mu["bfloat16"].shape == (12,)


def test_inside_masked_and_chain():
    params = testing.example_params()
    mask = jax.tree.map(lambda p: p.ndim >= 2, params)
    wrapped = optax.chain(
        optax.clip_by_global_norm(1.0), optax.masked(jr.flat_leaves(jr.adam(0.1)), mask)
    )
    plain = optax.chain(
        optax.clip_by_global_norm(1.0), optax.masked(jr.adam(0.1), mask)
    )
    a, _ = _run(wrapped, params)
    e, _ = _run(plain, params)
    # Same arithmetic, but inside a larger jitted program XLA may fuse (and
    # contract into FMAs) differently for the two layouts: 1 ulp at most.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(e), strict=True):
        np.testing.assert_allclose(x, y, rtol=3e-7, atol=0)


def test_errors_name_the_problem():
    tx = jr.flat_leaves(jr.sgd(0.1))
    params = {"w": jnp.zeros(3)}
    with pytest.raises(TypeError, match="expected the FlatState"):
        tx.update(params, jr.sgd(0.1).init(params))
    with pytest.raises(ValueError, match="does not match the parameter tree"):
        tx.update(params, tx.init(params), {"v": jnp.zeros(3)})
