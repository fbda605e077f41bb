"""``jr.psgd_kron``: its schedule, its factors, its norm bound and its safeguards.

The registry's authors' test compares the rule with psgd-jax's ``kron`` over
six option sets (scanned layers among them); here: the update-probability
schedule is the formula (and psgd-jax's, when installed), the norm bound
brackets the spectral norm, the factors refit exactly every ``1/p`` steps and
stay upper triangular, a step's RMS is capped, ill-conditioned gradients give
no NaN, scanned layers are fitted by the devices that own them, and bad
options are named.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import step_through_ill_conditioned_gradients

import jaxopt_rules as jr
from jaxopt_rules.rules._psgd_kron import (
    merged_shape,
    norm_lower_bound,
    triangular_axes,
)


def test_update_probability_schedule_is_the_formula():
    schedule = jr.psgd_update_probability(0.9, 0.05, 0.01, 30)
    n = np.arange(1, 500)
    expected = np.clip(0.9 * np.exp(-0.01 * (n - 30)), 0.05, 0.9)
    np.testing.assert_allclose(schedule(jnp.asarray(n)), expected, rtol=1e-6)
    if importlib.util.find_spec("psgd_jax") is not None:
        import torch_problem

        precond_update_prob_schedule = torch_problem._jax_reference(
            "psgd_jax.kron.precond_update_prob_schedule"
        )  # (imported with the optax shim in place)

        theirs = precond_update_prob_schedule(0.9, 0.05, 0.01, 30)
        steps = jnp.asarray(n, jnp.int32)  # as the rules call it: count + 1
        np.testing.assert_array_equal(schedule(steps), theirs(steps))


@pytest.mark.parametrize("seed", range(5))
def test_norm_lower_bound_brackets_the_spectral_norm(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(7, 7)) * np.logspace(-3, 3, 7)
    a = jnp.asarray(x @ x.T)
    exact = np.linalg.norm(np.asarray(a), 2)
    bound = float(norm_lower_bound(a))
    assert exact / np.sqrt(2) <= bound <= exact * (1 + 1e-6)
    assert float(norm_lower_bound(jnp.zeros((3, 3)))) == 0.0


def test_axes_follow_the_options():
    assert triangular_axes((4, 5), 8192, 2, None) == (True, True)
    assert triangular_axes((4, 5), 4, 2, None) == (True, False)
    assert triangular_axes((4, 5), 8192, 3, None) == (False, False)
    assert triangular_axes((5, 5), 8192, 2, "one_diag") == (True, False)
    assert triangular_axes((4, 5), 8192, 2, "all_diag") == (False, False)
    assert triangular_axes((7,), 8192, 2, None) == (False,)
    assert triangular_axes((4, 5), 8192, 2, "smart_one_diag") == (True, False)
    assert triangular_axes((5, 5), 8192, 2, "smart_one_diag") == (True, True)
    assert triangular_axes((5, 2, 5), 8192, 2, "smart_one_diag") == (True,) * 3


def test_merged_dims_fit_the_leaf_as_a_matrix():
    # (2, 3, 4) as (6, 4): factors of 36 + 16 numbers instead of 4 + 9 + 16;
    # with one layer per leading index, each (3, 4) layer is unchanged.
    params = {"w": jnp.zeros((2, 3, 4))}
    assert merged_shape((2, 3, 4)) == (6, 4)
    assert merged_shape((4, 3, 2)) == (12, 2)  # (as kron-torch merges it)
    tx = jr.psgd_kron(0.1, merge_dims=True)
    assert tx.init(params).factors["w"].shape == (52,)
    assert jr.psgd_kron(0.1).init(params).factors["w"].shape == (29,)
    scanned = jr.psgd_kron(0.1, merge_dims=True, scanned_layers=True)
    assert scanned.init(params).factors["w"].shape == (2, 25)
    grads = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)))}
    for tx in (jr.psgd_kron(0.1, merge_dims=True), scanned):
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        assert updates["w"].shape == (2, 3, 4)
        assert np.all(np.isfinite(updates["w"]))


def test_the_damped_momentum_is_preconditioned_only_on_refits():
    # kron-torch's in-place damping: the step moves by about sqrt(eps32) of
    # the momentum's mean on the steps that refit, and not otherwise.
    params = {"w": jnp.zeros((4, 3))}
    grads = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))}
    for p, moves in ((1.0, True), (0.5, False)):
        steps = [
            jr.psgd_kron(0.1, b1=0.0, preconditioner_update_probability=p, **kw)
            for kw in ({}, {"precondition_damped_momentum": True})
        ]
        a, b = (tx.update(grads, tx.init(params), params)[0]["w"] for tx in steps)
        change = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
        assert (1e-5 < change < 1e-2) if moves else change == 0.0, (p, change)


def test_factors_refit_every_1_over_p_steps_and_stay_triangular():
    tx = jr.psgd_kron(0.01, preconditioner_update_probability=0.25)
    rng = np.random.default_rng(0)
    params = {"w": jnp.zeros((4, 3))}
    state = tx.init(params)
    update = jax.jit(tx.update)
    changed = []
    for _ in range(12):
        grads = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
        _, new = update(grads, state, params)
        changed.append(not np.array_equal(new.factors["w"], state.factors["w"]))
        state = new
    assert changed == [False, False, False, True] * 3
    q = np.asarray(state.factors["w"])
    left, right = q[:16].reshape(4, 4), q[16:].reshape(3, 3)
    assert not np.allclose(left, np.eye(4))  # it moved
    np.testing.assert_array_equal(np.tril(left, -1), 0.0)
    np.testing.assert_array_equal(np.tril(right, -1), 0.0)


def test_a_step_has_rms_at_most_1_1_times_the_learning_rate():
    tx = jr.psgd_kron(0.5, b1=0.0, preconditioner_init_scale=100.0)
    params = {"w": jnp.zeros((4, 3))}
    grads = {"w": jnp.ones((4, 3))}
    updates, _ = tx.update(grads, tx.init(params), params)
    rms = float(jnp.sqrt(jnp.mean(updates["w"] ** 2)))
    np.testing.assert_allclose(rms, 0.5 * 1.1, rtol=1e-5)  # capped, not 1e4


@pytest.mark.parametrize("mode", [None, "one_diag"])
def test_ill_conditioned_gradients_give_no_nan(mode):
    tx = jr.psgd_kron(
        1e-2, memory_save_mode=mode, preconditioner_update_probability=1.0
    )
    step_through_ill_conditioned_gradients(tx)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="smart_one_diag"):
        jr.psgd_kron(0.1, memory_save_mode="diag")
    with pytest.raises(ValueError, match="preconditioner_update_probability"):
        jr.psgd_kron(0.1, preconditioner_update_probability=0.0)
    with pytest.raises(ValueError, match="max_size_triangular"):
        jr.psgd_kron(0.1, max_size_triangular=2.5)
    tx = jr.psgd_kron(0.1)
    params = {"w": jnp.zeros(3)}
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))


def test_scanned_layers_are_fitted_on_their_owners():
    """Each device fits, applies and stores the factors of its own layers."""
    from helpers import check_layers_owned

    check_layers_owned(jr.psgd_kron(1e-2, scanned_layers=True), ("factors",))


def test_a_scanned_scalar_is_named():
    tx = jr.psgd_kron(0.1, scanned_layers={"w": True, "s": False})
    tx.init({"w": jnp.zeros((2, 3)), "s": jnp.zeros(())})  # fine
    tx = jr.psgd_kron(0.1, scanned_layers=True)
    with pytest.raises(ValueError, match="scanned_layers marks a scalar"):
        tx.init({"s": jnp.zeros(())})


@pytest.mark.skipif(
    importlib.util.find_spec("kron_torch") is None
    or importlib.util.find_spec("torch") is None,
    reason="needs torch and kron-torch",
)
def test_kron_torch_differs_only_by_its_float32_solves(monkeypatch):
    # The comparison's float64 tolerance (1e-7) is for kron-torch's
    # triangular solves, made in float32 whatever the precision: with them
    # in float64 its runs equal the rule's to rounding.
    import sys

    import torch
    import torch_problem as tp

    def solve_in_float64(x, a):
        flat = x.reshape(-1, x.size(-1))
        solved = torch.linalg.solve_triangular(a, flat, upper=True, left=False)
        return solved.reshape_as(x)

    spec = next(s for s in jr.REGISTRY if s.name == "psgd_kron")
    _, reference = spec.authors_references[1]
    tp.optimizer_class(reference.optimizer)  # (imported, its warnings ignored)
    kron = sys.modules["kron_torch.kron"]
    data = tp.problem(0)
    errors = []
    for ours, theirs in reference.cases:
        ours_run = tp.run_jax(spec.factory, dict(ours), data, np.float64)
        as_shipped = tp.run_reference(reference, theirs, data, np.float64)
        monkeypatch.setattr(kron, "_solve_triangular_right", solve_in_float64)
        in_float64 = tp.run_reference(reference, theirs, data, np.float64)
        monkeypatch.undo()
        errors.append(
            (
                tp.relative_error(ours_run, as_shipped),
                tp.relative_error(ours_run, in_float64),
            )
        )
    assert max(e for e, _ in errors) > 1e-9, errors  # the solves show
    assert max(e for _, e in errors) < 1e-11, errors
