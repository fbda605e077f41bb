"""report: rules name their internals; log_step picks them up; free without it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr


@jr.rule
def _clipped_sgd(grad, *, learning_rate, clip=1.0):
    jr.report("clip_fraction", jnp.mean(jnp.abs(grad) > clip))
    jr.report("grad_max", jnp.max(jnp.abs(grad)))
    return -learning_rate * jnp.clip(grad, -clip, clip)


def _params():
    return {"a": jnp.array([0.5, -3.0, 2.0, 0.1]), "b": {"w": jnp.ones((2, 3)) * 4.0}}


def _step_records(tx, params, grads):
    records = []
    logged = jr.log_step(tx, every=1, sinks=[records.append], stats=())
    jax.jit(logged.update)(grads, logged.init(params), params)
    logged.flush()
    return records


def test_a_rule_reports_one_value_per_leaf_named_by_path():
    params = _params()
    grads = {"a": jnp.array([0.5, -3.0, 2.0, 0.1]), "b": {"w": jnp.full((2, 3), 0.2)}}
    (record,) = _step_records(_clipped_sgd(0.1), params, grads)
    expected = {
        "clip_fraction/a": np.mean(np.abs([0.5, -3.0, 2.0, 0.1]) > 1.0),
        "grad_max/a": 3.0,
        "clip_fraction/b/w": 0.0,
        "grad_max/b/w": 0.2,
    }
    assert set(expected) <= set(record)
    for name, value in expected.items():
        np.testing.assert_allclose(record[name], value, rtol=1e-6)


def test_lamb_reports_its_trust_ratio():
    params = {"w": jnp.array([3.0, 4.0])}
    grads = {"w": jnp.array([1.0, 0.0])}
    (record,) = _step_records(jr.lamb(0.1), params, grads)
    # Step 1 with zero state: the Adam direction is sign(g) = [1, 0] (up to
    # eps), so the ratio is |p| / |d| = 5.
    np.testing.assert_allclose(record["trust_ratio/w"], 5.0, rtol=1e-5)


def test_a_single_array_reports_under_the_bare_name():
    params = jnp.array([3.0, 4.0])  # a tree that is one leaf: no path
    (record,) = _step_records(jr.lamb(0.1), params, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(record["trust_ratio"], 5.0, rtol=1e-5)


def test_a_plain_transform_reports_under_its_name_and_duplicates_are_numbered():
    def scale_by_half_with_report():
        def update(updates, state, params=None):
            jr.report("half", jnp.asarray(0.5))
            return jax.tree.map(lambda g: 0.5 * g, updates), state

        return optax.GradientTransformation(lambda p: optax.EmptyState(), update)

    tx = optax.chain(scale_by_half_with_report(), scale_by_half_with_report())
    (record,) = _step_records(tx, _params(), _params())
    assert record["half"] == 0.5
    assert record["half#2"] == 0.5


def test_reporting_costs_nothing_without_log_step():
    @jr.rule
    def reports_an_expensive_norm(grad, *, learning_rate):
        jr.report("norm", jnp.linalg.norm(grad))
        return -learning_rate * grad

    @jr.rule
    def silent(grad, *, learning_rate):
        return -learning_rate * grad

    params = {"w": jnp.ones((64, 64))}

    def optimized_hlo(tx):
        fn = jax.jit(tx.update).lower(params, tx.init(params), params).compile()
        return fn.as_text()

    reported, plain = (
        optimized_hlo(reports_an_expensive_norm(0.1)),
        optimized_hlo(silent(0.1)),
    )
    assert "reduce" not in plain  # the check below can fail
    assert "reduce" not in reported
    assert "sqrt" not in reported
    # The same rule under log_step (no other statistics) does compute it.
    logged = jr.log_step(
        reports_an_expensive_norm(0.1), stats=(), sinks=[lambda r: None]
    )
    assert "sqrt" in optimized_hlo(logged)


def test_a_non_scalar_report_is_named():
    @jr.rule
    def bad(grad, *, learning_rate):
        jr.report("whole_grad", grad)
        return -learning_rate * grad

    tx = bad(0.1)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="'whole_grad' must be a scalar"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="non-empty string"):
        jr.report("", 1.0)
