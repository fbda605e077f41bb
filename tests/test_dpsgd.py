"""``jr.dpsgd`` against unmodified optax.contrib.dpsgd, on real per-example gradients.

The registry's tests run DP-SGD on the kit's batches of examples made from each
gradient (``testing.as_per_example``); here the per-example gradients come
from ``jax.vmap(jax.grad(loss))`` over a minibatch of a small regression, as a
training loop computes them.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing


def _data(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3)), dtype)
    y = jnp.asarray(rng.normal(size=(8,)), dtype)
    return x, y


def _params(dtype):
    return {"w": jnp.zeros((3,), dtype), "b": jnp.zeros((), dtype)}


def _loss(params, x, y):
    return (x @ params["w"] + params["b"] - y) ** 2


def _optax(**kwargs):
    with warnings.catch_warnings():  # optax's dpsgd passes the deprecated seed=
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.contrib.dpsgd(**kwargs)


def _run(tx, steps, dtype=jnp.float64):
    x, y = _data(dtype)
    params = _params(dtype)
    state = tx.init(params)
    per_example = jax.vmap(jax.grad(_loss), in_axes=(None, 0, 0))

    @jax.jit
    def step(params, state):
        updates, state = tx.update(per_example(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize(
    "kwargs",
    [
        {"l2_norm_clip": 0.5, "noise_multiplier": 1.0, "seed": 2},
        {"l2_norm_clip": 1.0, "noise_multiplier": 0.3, "seed": 0, "momentum": 0.9},
        {
            "l2_norm_clip": 10.0,
            "noise_multiplier": 0.1,
            "seed": 5,
            "momentum": 0.5,
            "nesterov": True,
        },
    ],
    ids=["plain", "momentum", "nesterov"],
)
def test_trajectory_equals_unmodified_optax(kwargs):
    with jax.enable_x64(True):
        ours, state = _run(jr.dpsgd(learning_rate=0.05, **kwargs), 25)
        theirs, ref_state = _run(_optax(learning_rate=0.05, **kwargs), 25)
        assert testing.relative_error(ours, theirs) <= 1e-12
        np.testing.assert_array_equal(
            state.rng_key, jax.random.key_data(ref_state[0].rng_key)
        )
        assert testing.relative_error(ours, _params(jnp.float64)) > 1e-2  # it moved


def test_clipping_follows_the_norm_over_all_leaves():
    # Example 1 has norm 5 over both leaves (3 and 4), example 2 norm 0.5.
    grads = {"a": jnp.array([[3.0], [0.3]]), "b": jnp.array([[4.0], [0.4]])}
    params = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
    tx = jr.dpsgd(1.0, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Example 1 scaled by 1/5, example 2 kept; the mean of the two.
    np.testing.assert_allclose(updates["a"], [-(0.6 + 0.3) / 2], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], [-(0.8 + 0.4) / 2], rtol=1e-6)


def test_the_seed_may_be_a_key():
    params = _params(jnp.float32)
    a = jr.dpsgd(0.1, 1.0, 1.0, seed=7)
    b = jr.dpsgd(0.1, 1.0, 1.0, seed=jax.random.key(7))
    np.testing.assert_array_equal(a.init(params).rng_key, b.init(params).rng_key)


def test_per_example_gradients_are_required_and_named():
    params = _params(jnp.float32)
    tx = jr.dpsgd(0.1, 1.0, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"per-example gradients.*\['b'\] has shape"):
        tx.update(params, tx.init(params), params)  # plain gradients
    batch = {"w": jnp.zeros((4, 3)), "b": jnp.zeros((5,))}
    with pytest.raises(ValueError, match=r"same length.*\['w'\] has shape \(4, 3\)"):
        tx.update(batch, tx.init(params), params)
    with pytest.raises(TypeError, match="seed"):
        jr.dpsgd(0.1, 1.0, 1.0)  # the seed is required, as in optax
    with pytest.raises(ValueError, match="l2_norm_clip"):
        jr.dpsgd(0.1, 0.0, 1.0, seed=0)


def test_state_converts_from_and_to_optax():
    with jax.enable_x64(True):
        kwargs = {"learning_rate": 0.05, "l2_norm_clip": 1.0, "noise_multiplier": 0.3}
        kwargs |= {"seed": 1, "momentum": 0.9}
        ours, ref = jr.dpsgd(**kwargs), _optax(**kwargs)
        _, ref_state = _run(ref, 4)
        state = jr.from_optax(ref_state, ours, _params(jnp.float64), count=4)
        np.testing.assert_array_equal(
            state.rng_key, jax.random.key_data(ref_state[0].rng_key)
        )
        np.testing.assert_array_equal(state.trace["w"], ref_state[1].trace["w"])
        back = jr.to_optax(state, ref, _params(jnp.float64))
        assert jax.tree.structure(back) == jax.tree.structure(ref_state)
