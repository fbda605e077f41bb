"""jr.schedule_free_eval_params and the AdEMAMix paper's schedulers."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import jaxopt_rules as jr


PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.25)}
GRADS = {"w": jnp.array([0.3, -1.0, 2.0]), "b": jnp.array(-0.5)}


def _run(tx, params=PARAMS, steps=3):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(GRADS, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _by_hand(params, z, b1):
    return {k: (params[k] - (1 - b1) * z[k]) / b1 for k in params}


def test_eval_params_are_x_for_our_state_and_optaxs():
    params, state = _run(jr.schedule_free_adamw(0.1, b1=0.8))
    ours = jr.schedule_free_eval_params(state, params, b1=0.8)
    expected = _by_hand(params, state.z, 0.8)
    for k in PARAMS:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-6)
        assert ours[k].dtype == params[k].dtype
    # optax's state holds b1: no argument needed, and its own helper agrees.
    params, state = _run(optax.contrib.schedule_free_adamw(0.1, b1=0.8))
    ours = jr.schedule_free_eval_params(state, params)
    theirs = optax.contrib.schedule_free_eval_params(state, params)
    for k in PARAMS:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6)


def test_eval_params_read_b1_through_wrappers():
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(jr.schedule_free_sgd)(learning_rate=0.1, b1=0.7),
    )
    params, state = _run(tx)
    inner = state[1].inner_state
    got = jr.schedule_free_eval_params(state, params)
    expected = _by_hand(params, inner.z, 0.7)
    for k in PARAMS:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
    # The argument wins over the state's value.
    other = jr.schedule_free_eval_params(state, params, b1=0.5)
    np.testing.assert_allclose(other["w"], _by_hand(params, inner.z, 0.5)["w"])


def test_eval_params_leave_holes_and_integers_alone():
    params = {"w": jnp.array([1.0, 2.0]), "n": jnp.array([3, 4])}
    tx = optax.masked(jr.schedule_free_sgd(0.1), {"w": True, "n": False})
    state = tx.init(params)
    for g in (1.0, -2.0, 0.5):  # (after one step x = y = z)
        grads = {"w": jnp.array([g, 1.0]), "n": jnp.zeros(2, int)}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    got = jr.schedule_free_eval_params(state, params, b1=0.9)
    np.testing.assert_array_equal(got["n"], params["n"])
    assert not np.allclose(got["w"], params["w"])


def test_eval_params_errors_name_the_problem():
    params, state = _run(jr.schedule_free_sgd(0.1))
    with pytest.raises(ValueError, match="pass b1="):
        jr.schedule_free_eval_params(state, params)
    with pytest.raises(ValueError, match="found 0 states"):
        jr.schedule_free_eval_params(jr.adam(0.1).init(PARAMS), PARAMS, b1=0.9)
    two = (state, state)
    with pytest.raises(ValueError, match="found 2 states"):
        jr.schedule_free_eval_params(two, params, b1=0.9)
    with pytest.raises(ValueError, match=r"differ in structure.*missing"):
        jr.schedule_free_eval_params(state, {"w": params["w"]}, b1=0.9)


def test_ademamix_schedulers_follow_the_papers_formulas():
    alpha = jr.ademamix_alpha_scheduler(5.0, 10)
    # The schedule is of the 0-based count; the paper's t is count + 1.
    assert float(alpha(0)) == pytest.approx(0.5)
    assert float(alpha(9)) == pytest.approx(5.0)
    assert float(alpha(100)) == pytest.approx(5.0)
    b3 = jr.ademamix_b3_scheduler(0.9, 0.999, 4)
    # t = 2 of T = 4: exp(ln .9 ln .999 / (ln .999 / 2 + ln .9 / 2)).
    half = math.exp(
        math.log(0.9) * math.log(0.999) / (0.5 * math.log(0.999) + 0.5 * math.log(0.9))
    )
    assert float(b3(1)) == pytest.approx(half, rel=1e-6)
    assert float(b3(3)) == pytest.approx(0.999, rel=1e-6)  # t = T
    assert float(b3(50)) == pytest.approx(0.999, rel=1e-6)  # capped after
    # The half-life 1 / (1 - b3) grows from b1's toward b3's.
    values = [float(b3(c)) for c in range(4)]
    assert values == sorted(values)
    assert values[0] > 0.9


def test_ademamix_schedulers_refuse_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps must be positive"):
        jr.ademamix_alpha_scheduler(5.0, 0)
    with pytest.raises(ValueError, match="need 0 < b1 <= b3 < 1"):
        jr.ademamix_b3_scheduler(0.99, 0.9, 10)
