"""``jr.sophia`` and its Hessian estimator against unmodified optax.contrib.

The registry's reference test compares the drop-in with optax's Sophia over
its option sets; here: the estimator's draws and estimates equal optax's, a
custom estimator and its extra arguments reach it, the refresh interval may
be injected, integer leaves are held constant, the win-rate printout matches
optax's, and bad arguments are named.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing


def _params(dtype=jnp.float64):
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), dtype),
        "b": jnp.asarray(rng.normal(size=(4,)), dtype),
        "s": jnp.asarray(rng.normal(), dtype),
    }


def _loss(params):
    """Not separable, so the Hessian has off-diagonal terms the signs pick up."""
    w, b, s = params["w"], params["b"], params["s"]
    return jnp.sum(jnp.tanh(w @ b) ** 2) + jnp.sum(b**4) / 4 + s**2 * jnp.sum(w**2)


def _run(tx, params, steps, **extra):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(_loss)(params)
        updates, state = tx.update(grads, state, params, obj_fn=_loss, **extra)
        return optax.apply_updates(params, updates), state, updates

    out = []
    for _ in range(steps):
        params, state, updates = step(params, state)
        out.append(updates)
    return params, state, out


def test_estimator_draws_and_estimates_as_optax():
    with jax.enable_x64(True):
        params = _params()
        ours = jr.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(7))
        ref = optax.contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(7))
        s_ours, s_ref = ours.init(params), ref.init(params)
        for _ in range(3):
            est, s_ours = ours.update(None, s_ours, params, obj_fn=_loss)
            expected, s_ref = ref.update(None, s_ref, params, obj_fn=_loss)
            assert testing.relative_error(est, expected) <= 1e-15
            np.testing.assert_array_equal(s_ours.key, s_ref.key)


def test_estimate_is_unbiased_on_a_diagonal_hessian():
    # For a separable loss z * (H z) = diag(H) exactly, whatever the signs.
    params = {"x": jnp.array([1.0, -2.0, 0.5])}
    est = jr.hutchinson_estimator_diag_hessian()
    loss = lambda p: jnp.sum(jnp.array([1.0, 2.0, 3.0]) * p["x"] ** 2)
    diag, _ = est.update(None, est.init(params), params, obj_fn=loss)
    np.testing.assert_allclose(diag["x"], [2.0, 4.0, 6.0])


@pytest.mark.parametrize(
    "hyper",
    [
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "update_interval": 2, "b1": 0.9, "gamma": 0.05},
        {"learning_rate": 3e-3, "clip_threshold": None, "eps": 0.3},
        {
            "learning_rate": 1e-2,
            "weight_decay_mask": {"w": True, "b": False, "s": False},
        },
    ],
    ids=["defaults", "interval", "no-clip", "mask"],
)
def test_trajectory_equals_unmodified_optax(hyper):
    with jax.enable_x64(True):
        params = _params()
        p_ours, _, u_ours = _run(jr.sophia(**hyper), params, 30)
        p_ref, _, u_ref = _run(optax.contrib.sophia(**hyper), params, 30)
        assert testing.relative_error(u_ours, u_ref) <= 1e-12
        assert testing.relative_error(p_ours, p_ref) <= 1e-12
        assert testing.relative_error(p_ours, params) > 1e-3  # it moved


def _scaled_hutchinson(scale):
    """A custom estimator with an extra argument of its own (``scale=``)."""
    inner = optax.contrib.hutchinson_estimator_diag_hessian()

    def update(updates, state, params=None, *, scale, **extra):
        est, state = inner.update(updates, state, params, **extra)
        return jax.tree.map(lambda e: scale * e, est), state

    return optax.GradientTransformationExtraArgs(inner.init, update)


def test_a_custom_estimator_gets_every_extra_argument():
    with jax.enable_x64(True):
        params = _params()
        est = _scaled_hutchinson(None)
        ours = jr.sophia(1e-2, hessian_diagonal_fn=est)
        ref = optax.contrib.sophia(1e-2, hessian_diagonal_fn=est)
        p_ours, s_ours, _ = _run(ours, params, 12, scale=3.0)
        p_ref, s_ref, _ = _run(ref, params, 12, scale=3.0)
        assert testing.relative_error(p_ours, p_ref) <= 1e-12
        assert testing.relative_error(s_ours.nu, s_ref[0].nu) <= 1e-12


def test_update_interval_may_be_injected():
    with jax.enable_x64(True):
        params = _params()
        injected = jr.inject_hyperparams(jr.sophia)(
            learning_rate=1e-2, update_interval=3
        )
        p_inj, _, _ = _run(injected, params, 10)
        p_plain, _, _ = _run(jr.sophia(1e-2, update_interval=3), params, 10)
        assert testing.relative_error(p_inj, p_plain) <= 1e-14


def test_the_estimate_is_refreshed_every_update_interval_steps():
    params = _params(jnp.float32)
    tx = jr.sophia(1e-2, update_interval=3)
    state = tx.init(params)
    nus = []
    for _ in range(7):
        grads = jax.grad(_loss)(params)
        _, state = tx.update(grads, state, params, obj_fn=_loss)
        nus.append(state.nu["w"])
    before = [jnp.zeros_like(nus[0]), *nus[:-1]]
    changed = [not np.array_equal(a, b) for a, b in zip(before, nus, strict=True)]
    # Refreshed at counts 0, 3, 6 (the count before each update), as optax.
    assert changed == [True, False, False, True, False, False, True]


def test_integer_leaves_are_held_constant():
    params = {**_params(jnp.float32), "steps": jnp.asarray(3, jnp.int32)}

    def loss(p):
        return _loss(p) * (1.0 + 0.0 * p["steps"].astype(jnp.float32))

    tx = jr.sophia(1e-2, update_interval=1)
    grads = jax.grad(loss, allow_int=True)(params)
    grads["steps"] = jnp.zeros((), jnp.int32)
    updates, state = tx.update(grads, tx.init(params), params, obj_fn=loss)
    assert updates["steps"].dtype == jnp.int32
    assert int(updates["steps"]) == 0
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.nu))


def test_win_rate_printout_matches_optax(capfd):
    params = _params(jnp.float32)
    kwargs = {"learning_rate": 1e-2, "verbose": True, "print_win_rate_every_n_steps": 2}
    for tx in (jr.sophia(**kwargs), optax.contrib.sophia(**kwargs)):
        _run(tx, params, 6)
        jax.effects_barrier()
    lines = capfd.readouterr().out.strip().splitlines()
    rates = [float(re.search(r"win rate: (\S+)", line)[1]) for line in lines]
    assert len(rates) == 6  # steps 2, 4 and 6, for each
    np.testing.assert_allclose(rates[:3], rates[3:], rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="update_interval must be >= 1"):
        jr.sophia(1e-2, update_interval=0)
    with pytest.raises(ValueError, match="print_win_rate_every_n_steps"):
        jr.sophia(1e-2, verbose=True)
    with pytest.raises(ValueError, match="b1"):
        jr.sophia(1e-2, b1=1.5)
    params = _params(jnp.float32)
    tx = jr.sophia(1e-2)
    grads = jax.grad(_loss)(params)
    with pytest.raises(ValueError, match="needs obj_fn"):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads, tx.init(params), obj_fn=_loss)
    with pytest.raises(TypeError, match="expected a SophiaState"):
        tx.update(grads, jr.adam(0.1).init(params), params, obj_fn=_loss)


def test_state_converts_from_and_to_optax():
    with jax.enable_x64(True):
        params = _params()
        ours, ref = (
            jr.sophia(1e-2, update_interval=2),
            optax.contrib.sophia(1e-2, update_interval=2),
        )
        p, ref_state, _ = _run(ref, params, 5)
        state = jr.from_optax(ref_state, ours, p)
        np.testing.assert_array_equal(state.hessian_fn_state.key, ref_state[0][3].key)
        p_ours, _, _ = _run_from(ours, p, state, 6)
        p_ref, _, _ = _run_from(ref, p, ref_state, 6)
        assert testing.relative_error(p_ours, p_ref) <= 1e-12
        back = jr.to_optax(state, ref, p)
        assert jax.tree.structure(back) == jax.tree.structure(ref_state)


def _run_from(tx, params, state, steps):
    for _ in range(steps):
        grads = jax.grad(_loss)(params)
        updates, state = tx.update(grads, state, params, obj_fn=_loss)
        params = optax.apply_updates(params, updates)
    return params, state, None
