"""Per-slot storage dtypes with stochastic rounding to bfloat16 (the rule core)."""

import inspect
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules._core import stochastic_round_bf16


SLOTTED = [s for s in jr.REGISTRY if s.factory.definition.slots]


def _bf16_neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bits = x.astype(np.float32).view(np.uint32)
    lo = (bits & np.uint32(0xFFFF0000)).view(np.float32)
    hi = ((bits & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32)
    return lo, hi


@pytest.mark.parametrize("spec", SLOTTED, ids=[s.name for s in SLOTTED])
def test_every_rule_with_slots_takes_the_rounding_arguments(spec):
    parameters = inspect.signature(spec.factory).parameters
    assert parameters["stochastic_rounding"].default is False
    assert parameters["rounding_seed"].default is None  # seed 0
    assert parameters["stochastic_rounding"].kind is inspect.Parameter.KEYWORD_ONLY
    assert any(name.endswith("_dtype") for name in parameters)
    assert {"stochastic_rounding", "rounding_seed"} <= set(spec.factory.static_args)


def test_rounding_is_to_a_neighbour_and_unbiased():
    x = np.full((200_000,), 1.0 + 2.0**-10, np.float32)  # 1/8 of a bf16 step up
    x[100_000:] = -3.0 - 3 * 2.0**-9  # 3/4 of a step down (in magnitude up)
    y = np.asarray(stochastic_round_bf16(jnp.asarray(x), jnp.uint32(7)))
    lo, hi = _bf16_neighbours(x)
    assert np.all((y == lo) | (y == hi))
    np.testing.assert_array_equal(y, y.astype(jnp.bfloat16).astype(np.float32))
    # Mean within 5 standard errors of x (Bernoulli rounding).
    for part in (slice(0, 100_000), slice(100_000, None)):
        step = float(hi[part][0] - lo[part][0])
        p = float(x[part][0] - lo[part][0]) / step
        standard_error = abs(step) * np.sqrt(p * (1 - p) / 100_000)
        assert abs(y[part].mean() - x[part][0]) <= 5 * standard_error


def test_non_finite_values_pass_through():
    x = jnp.array([jnp.inf, -jnp.inf, jnp.nan, 1.0])
    y = np.asarray(stochastic_round_bf16(x, jnp.uint32(1)))
    np.testing.assert_array_equal(y, [np.inf, -np.inf, np.nan, 1.0])


def _momentum_run(tx, steps=300):
    params = {"w": jnp.ones((1000,))}
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = {"w": jnp.full((1000,), 1e-3)}
    for _ in range(steps):
        _, state = update(grads, state, params)
    return state


def test_small_increments_are_not_lost():
    """A bfloat16 momentum of tiny gradients: nearest rounding stalls, SR does not."""
    exact = _momentum_run(jr.sgd(1.0, momentum=0.999)).trace["w"]
    nearest = _momentum_run(
        jr.sgd(1.0, momentum=0.999, accumulator_dtype=jnp.bfloat16)
    ).trace["w"]
    rounded = _momentum_run(
        jr.sgd(
            1.0,
            momentum=0.999,
            accumulator_dtype=jnp.bfloat16,
            stochastic_rounding=True,
        )
    ).trace["w"]
    target = float(jnp.mean(exact))
    assert abs(float(jnp.mean(nearest.astype(jnp.float32))) / target - 1) > 0.02
    assert abs(float(jnp.mean(rounded.astype(jnp.float32))) / target - 1) < 0.005
    assert rounded.dtype == jnp.bfloat16


def test_seeded_and_reproducible():
    def run(seed):
        tx = jr.adam(
            1e-3,
            mu_dtype=jnp.bfloat16,
            nu_dtype=jnp.bfloat16,
            stochastic_rounding=True,
            rounding_seed=seed,
        )
        return _momentum_run(tx, steps=5)

    a, b, c = run(0), run(0), run(1)
    assert type(a).__name__ == "AdamRoundingState"
    np.testing.assert_array_equal(np.asarray(a.mu["w"]), np.asarray(b.mu["w"]))
    assert not np.array_equal(np.asarray(a.mu["w"]), np.asarray(c.mu["w"]))
    # The key is the seed's, unchanged: the step count varies the rounding.
    np.testing.assert_array_equal(
        np.asarray(a.rounding_key),
        np.asarray(jax.random.key_data(jax.random.key(0))),
    )


def test_saved_and_restored_state_continues_exactly():
    tx = jr.lion(1e-3, mu_dtype=jnp.bfloat16, stochastic_rounding=True)
    params = {"w": jnp.linspace(-1.0, 1.0, 512)}

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(lambda p: jnp.sin(3 * p), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    p, s = params, tx.init(params)
    for _ in range(4):
        p, s = step(p, s)
    leaves, treedef = jax.tree.flatten((p, s))
    blob = pickle.dumps([np.asarray(x) for x in leaves])
    p2, s2 = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in pickle.loads(blob)])
    for _ in range(4):
        p, s = step(p, s)
        p2, s2 = step(p2, s2)
    for x, y in zip(jax.tree.leaves((p, s)), jax.tree.leaves((p2, s2)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_float32_slots_are_untouched():
    """Stochastic rounding only changes slots stored in bfloat16."""
    plain = _momentum_run(jr.adam(1e-3), steps=3)
    rounded = _momentum_run(jr.adam(1e-3, stochastic_rounding=True), steps=3)
    np.testing.assert_array_equal(
        np.asarray(plain.mu["w"]), np.asarray(rounded.mu["w"])
    )
    np.testing.assert_array_equal(
        np.asarray(plain.nu["w"]), np.asarray(rounded.nu["w"])
    )


def test_bfloat16_parameters_get_rounded_slots_by_default():
    tx = jr.adam(1e-3, stochastic_rounding=True)
    params = {"w": jnp.ones((64,), jnp.bfloat16)}
    state = tx.init(params)
    _, state = jax.jit(tx.update)({"w": jnp.full((64,), 0.1, jnp.bfloat16)}, state)
    assert state.mu["w"].dtype == jnp.bfloat16


def test_inject_hyperparams_without_static_args_traces_the_seed():
    tx = optax.inject_hyperparams(jr.adam)(
        1e-2, stochastic_rounding=True, rounding_seed=3, mu_dtype="bfloat16"
    )
    plain = jr.adam(
        1e-2, mu_dtype=jnp.bfloat16, stochastic_rounding=True, rounding_seed=3
    )
    np.testing.assert_array_equal(
        np.asarray(_momentum_run(tx, steps=3).inner_state.mu["w"]),
        np.asarray(_momentum_run(plain, steps=3).mu["w"]),
    )


def test_inject_hyperparams_with_static_rounding_arguments():
    tx = optax.inject_hyperparams(jr.adam, static_args=jr.adam.static_args)(
        learning_rate=1e-2,
        mu_dtype=jnp.bfloat16,
        stochastic_rounding=True,
        rounding_seed=3,
    )
    plain = jr.adam(
        1e-2, mu_dtype=jnp.bfloat16, stochastic_rounding=True, rounding_seed=3
    )
    a = _momentum_run(tx, steps=3)
    b = _momentum_run(plain, steps=3)
    np.testing.assert_array_equal(
        np.asarray(a.inner_state.mu["w"]), np.asarray(b.mu["w"])
    )


def test_bad_rounding_arguments_are_named():
    with pytest.raises(TypeError, match="stochastic_rounding must be True or False"):
        jr.adam(1e-3, stochastic_rounding=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rounding_seed must be an integer"):
        jr.adam(1e-3, rounding_seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mu_dtype=float16"):
        jr.adam(1e-3, mu_dtype=jnp.float16, stochastic_rounding=True)
    tx = jr.adam(1e-3, stochastic_rounding=True)
    params = {"w": jnp.ones((4,), jnp.float16)}
    with pytest.raises(ValueError, match=r"\['w'\].*float16"):
        tx.update(params, tx.init(params))
    plain_state = jr.adam(1e-3).init({"w": jnp.ones(4)})
    with pytest.raises(TypeError, match="rounding_key"):
        tx.update({"w": jnp.ones(4)}, plain_state)
