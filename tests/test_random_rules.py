"""Rules that draw random numbers: the reserved ``key``, the state's ``rng_key``.

The draws are checked against optax's own ``add_noise`` and
``differentially_private_aggregate`` key splits (the numbers optax would
draw), not against the core's code.
"""

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr


@jr.rule
def _noise(grad, key, *, learning_rate):
    return -learning_rate * jr.random_like(key, grad)


@jr.rule(seed_arg="seed", seed_default=inspect.Parameter.empty)
def _dp_noise(grad, key, *, learning_rate):
    return -learning_rate * jr.random_like(key, grad)


PARAMS = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(4), "c": jnp.zeros(())}


def _optax_noise(seed, steps):
    """The normal draws of optax.add_noise (eta=1, gamma=0: unit variance)."""
    tx = optax.add_noise(1.0, 0.0, seed)
    state = tx.init(PARAMS)
    draws = []
    for _ in range(steps):
        noise, state = tx.update(jax.tree.map(jnp.zeros_like, PARAMS), state)
        draws.append(noise)
    return draws


def test_draws_are_optax_add_noise_draws_step_after_step():
    tx = _noise(1.0, key=5)
    state = tx.init(PARAMS)
    assert state._fields == ("count", "rng_key")
    assert state.rng_key.dtype == np.uint32
    update = jax.jit(tx.update)
    for expected in _optax_noise(5, 3):
        updates, state = update(jax.tree.map(jnp.zeros_like, PARAMS), state)
        for u, e in zip(
            jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True
        ):
            np.testing.assert_array_equal(-u, e)


def test_seed_as_integer_key_or_raw_key_data_gives_one_state():
    states = [
        _noise(1.0, key=seed).init(PARAMS)
        for seed in (7, jax.random.key(7), jax.random.PRNGKey(7), np.int32(7))
    ]
    for state in states[1:]:
        np.testing.assert_array_equal(state.rng_key, states[0].rng_key)
    np.testing.assert_array_equal(_noise(1.0).init(PARAMS).rng_key, [0, 0])


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (True, TypeError, "key must be an integer, a key"),
        (0.5, TypeError, "key must be an integer, a key"),
        (jnp.zeros(3, jnp.uint32), TypeError, "raw key data"),
        (jax.random.split(jax.random.key(0), 2), ValueError, "one key"),
    ],
)
def test_bad_seeds_are_refused_by_name(seed, error, match):
    with pytest.raises(error, match=match):
        _noise(1.0, key=seed)


def test_seed_argument_can_be_renamed_and_required():
    assert "seed" in inspect.signature(_dp_noise).parameters
    assert "key" not in inspect.signature(_dp_noise).parameters
    assert "seed" in _dp_noise.static_args
    with pytest.raises(TypeError, match="seed"):
        _dp_noise(1.0)
    assert _dp_noise(1.0, seed=3).init(PARAMS).rng_key.shape == (2,)


def test_deprecated_seed_alias_of_noisy_sgd():
    with pytest.warns(DeprecationWarning, match="seed= is deprecated"):
        tx = jr.noisy_sgd(0.1, seed=3)
    np.testing.assert_array_equal(
        tx.init(PARAMS).rng_key, jr.noisy_sgd(0.1, key=3).init(PARAMS).rng_key
    )
    with pytest.raises(ValueError, match="not both"):
        jr.noisy_sgd(0.1, key=1, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jr.noisy_sgd(0.1, key=3)


def test_integer_leaves_do_not_change_the_other_leaves_draws():
    tx = _noise(1.0, key=1)
    with_int = {**PARAMS, "step": jnp.zeros((), jnp.int32)}
    plain, _ = tx.update(PARAMS, tx.init(PARAMS))
    mixed, _ = tx.update(with_int, tx.init(with_int))
    for name in PARAMS:
        np.testing.assert_array_equal(plain[name], mixed[name])
    assert mixed["step"] == 0


def test_a_state_without_its_key_is_refused():
    tx = _noise(1.0)
    state = tx.init(PARAMS)
    with pytest.raises(TypeError, match="uint32 key data"):
        tx.update(PARAMS, state._replace(rng_key=jnp.zeros(2)))


def test_a_widened_key_from_a_state_blending_wrapper_still_works():
    # optax's sam and lookahead(reset_state=True) blend states as
    # c * new + (1 - c) * old, which widens uint32 to a signed integer.
    tx = _noise(1.0, key=2)
    state = tx.init(PARAMS)
    widened = state._replace(rng_key=state.rng_key.astype(jnp.int32) * 1)
    a, _ = tx.update(PARAMS, state)
    b, _ = tx.update(PARAMS, widened)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_inject_hyperparams_and_vmap_over_seeds():
    tx = jr.inject_hyperparams(_noise)(learning_rate=1.0, key=4)
    updates, _ = tx.update(PARAMS, tx.init(PARAMS))
    expected = _optax_noise(4, 1)[0]
    for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(-u, e)
    # Many seeds in one program: vmap over the state's key.
    tx = _noise(1.0)
    keys = jax.vmap(lambda k: jax.random.key_data(jax.random.key(k)))(jnp.arange(3))
    states = jax.vmap(lambda k: tx.init(PARAMS)._replace(rng_key=k))(keys)
    batched, _ = jax.vmap(lambda s: tx.update(PARAMS, s))(states)
    for seed in range(3):
        single, _ = _noise(1.0, key=seed).update(
            PARAMS, _noise(1.0, key=seed).init(PARAMS)
        )
        for u, e in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_array_equal(u[seed], e)
