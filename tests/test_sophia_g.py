"""``jr.sophia_g`` and its Gauss-Newton-Bartlett estimator.

The registry's authors' test compares the rule with the authors' ``SophiaG``
(with their ``update_hessian`` fed the same probe gradient); here: the
estimator's mean is the exact Gauss-Newton diagonal, one estimate is the
squared gradient at the labels it drew, the estimate is refreshed exactly on
the authors' steps, the steps before the first estimate are sign descent,
other estimators plug in, and bad input is named.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr


def _classifier(dtype=jnp.float64):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 5)), dtype)
    params = {
        "w": jnp.asarray(rng.normal(size=(5, 3)), dtype),
        "b": jnp.asarray(rng.normal(size=(3,)), dtype),
    }

    def logits(p):
        return jnp.tanh(x @ p["w"]) * 2.0 + p["b"]

    return params, logits


def _gauss_newton_diagonal(params, logits):
    """diag(mean_i J_i^T (diag(p_i) - p_i p_i^T) J_i), from per-example Jacobians."""
    z = logits(params)
    p = jax.nn.softmax(z, axis=-1)
    jac = jax.jacobian(logits)(params)  # leaves: (examples, classes, *leaf)

    def diagonal(j):
        j = j.reshape(j.shape[0], j.shape[1], -1)  # (n, c, k)
        weighted = (
            p[:, :, None] * j - p[:, :, None] * jnp.einsum("nc,nck->nk", p, j)[:, None]
        )
        return jnp.mean(jnp.einsum("nck,nck->nk", j, weighted), axis=0)

    return {k: diagonal(jac[k]).reshape(params[k].shape) for k in params}


def test_estimate_averages_to_the_gauss_newton_diagonal():
    with jax.enable_x64(True):
        params, logits = _classifier()
        est = jr.gauss_newton_bartlett_estimator()
        keys = jax.random.split(jax.random.PRNGKey(3), 4000)

        def one(key):
            state = jr.rules._sophia_g.GaussNewtonBartlettState(
                key=jax.random.key_data(key)
            )
            return est.update(None, state, params, logits_fn=logits)[0]

        mean = jax.tree.map(lambda x: jnp.mean(x, 0), jax.vmap(one)(keys))
        exact = _gauss_newton_diagonal(params, logits)
        for k in params:
            scale = float(jnp.max(exact[k]))
            assert scale > 1e-3
            # 4000 draws: the mean's standard error is a few percent here
            np.testing.assert_allclose(mean[k], exact[k], rtol=0.1, atol=0.03 * scale)


def test_one_estimate_is_the_squared_gradient_at_the_drawn_labels():
    with jax.enable_x64(True):
        params, logits = _classifier()
        est = jr.gauss_newton_bartlett_estimator(jax.random.PRNGKey(11))
        state = est.init(params)
        diag, new_state = est.update(None, state, params, logits_fn=logits)
        _, sample = jax.random.split(state.key)
        labels = jax.random.categorical(sample, logits(params), axis=-1)

        def sampled_loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(
                logits(p), labels
            ).mean()

        g = jax.grad(sampled_loss)(params)
        for k in params:
            np.testing.assert_allclose(diag[k], 32 * g[k] ** 2, rtol=1e-12)
        assert not np.array_equal(new_state.key, state.key)


def test_refresh_on_the_authors_steps_and_sign_descent_before():
    params, logits = _classifier(jnp.float32)
    tx = jr.sophia_g(0.1, weight_decay=0.0, update_interval=3)
    state = tx.init(params)
    grads = jax.grad(lambda p: jnp.sum(logits(p) ** 2))(params)
    step = jax.jit(lambda s: tx.update(grads, s, params, logits_fn=logits))
    changed = []
    for t in range(8):
        updates, new = step(state)
        changed.append(not np.array_equal(new.nu["w"], state.nu["w"]))
        if t < 3:  # no estimate yet: h = 0, the step is lr * -sign(m)
            np.testing.assert_array_equal(updates["w"], -0.1 * jnp.sign(grads["w"]))
        state = new
    # the authors' loop estimates after steps 3 and 6: before updates 4 and 7
    assert changed == [False, False, False, True, False, False, True, False]


def test_integer_leaves_get_no_estimate():
    params, logits = _classifier(jnp.float32)
    params = {**params, "count": jnp.asarray(5, jnp.int32)}
    est = jr.gauss_newton_bartlett_estimator()
    diag, _ = est.update(None, est.init(params), params, logits_fn=logits)
    assert diag["count"].dtype == jnp.int32
    assert int(diag["count"]) == 0
    assert float(jnp.sum(diag["w"])) > 0


def test_hutchinson_estimator_plugs_in_with_obj_fn():
    params, logits = _classifier(jnp.float32)
    loss = lambda p: jnp.sum(logits(p) ** 2)
    tx = jr.sophia_g(
        0.1,
        update_interval=1,
        hessian_diagonal_fn=jr.hutchinson_estimator_diag_hessian(),
    )
    state = tx.init(params)
    grads = jax.grad(loss)(params)
    for _ in range(2):
        _, state = tx.update(grads, state, params, obj_fn=loss)
    assert float(jnp.max(jnp.abs(state.nu["w"]))) > 0


def test_bad_input_is_named():
    params, logits = _classifier(jnp.float32)
    tx = jr.sophia_g(0.1, update_interval=1)
    grads = jax.tree.map(jnp.ones_like, params)
    with pytest.raises(ValueError, match="needs logits_fn"):
        tx.update(grads, tx.init(params), params)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads, tx.init(params), logits_fn=logits)
    with pytest.raises(ValueError, match="real logits with classes on the last axis"):
        tx.update(grads, tx.init(params), params, logits_fn=lambda p: jnp.sum(p["w"]))
    with pytest.raises(ValueError, match="update_interval must be >= 1"):
        jr.sophia_g(0.1, update_interval=0)
    with pytest.raises(ValueError, match="rho"):
        jr.sophia_g(0.1, rho=0.0)
