"""Misuse gets a clear error that names the problem, never a NaN or an XLA trace."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr


PARAMS = {"enc": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, "head": jnp.ones(4)}


def test_missing_params():
    tx = jr.adamw(1e-3)
    with pytest.raises(ValueError, match=r"adamw: this rule reads the parameters"):
        tx.update(PARAMS, tx.init(PARAMS))


def test_gradient_tree_missing_a_leaf_names_the_path():
    tx = jr.adam(1e-3)
    grads = {"enc": {"w": jnp.ones((2, 3))}, "head": jnp.ones(4)}
    with pytest.raises(ValueError, match=r"missing \['enc'\]\['b'\]"):
        tx.update(grads, tx.init(PARAMS))


def test_gradient_tree_with_an_extra_leaf_names_the_path():
    tx = jr.sgd(1e-3)  # stateless: checked against the params
    grads = {**PARAMS, "extra": jnp.ones(1)}
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        tx.update(grads, tx.init(PARAMS), {**PARAMS})


def test_gradient_shape_mismatch_names_the_path():
    tx = jr.adam(1e-3)
    grads = {**PARAMS, "head": jnp.ones(5)}
    with pytest.raises(ValueError, match=r"\['head'\] has shape \(5,\)"):
        tx.update(grads, tx.init(PARAMS))


def test_wrong_state_object():
    tx = jr.adam(1e-3)
    with pytest.raises(TypeError, match=r"expected the state returned by this"):
        tx.update(PARAMS, optax.EmptyState())
    other = jr.sgd(0.1).init(PARAMS)
    with pytest.raises(TypeError, match=r"got a SgdCountState"):
        tx.update(PARAMS, other)


def test_non_numeric_leaves_name_the_path():
    """Integer leaves are left untouched, as in optax; strings are refused."""
    params = {**PARAMS, "step": np.array(["a", "b"])}
    with pytest.raises(TypeError, match=r"\['step'\] has dtype <U1"):
        jr.adam(1e-3).init(params)
    with pytest.raises(TypeError, match=r"gradient at \['step'\] has dtype <U1"):
        jr.sgd(1e-3).update(params, jr.sgd(1e-3).init(PARAMS))


def test_complex_leaf_for_a_real_only_rule_names_the_path():
    params = {**PARAMS, "step": jnp.ones(2, jnp.complex64)}
    with pytest.raises(TypeError, match=r"lion: parameter at \['step'\] is complex"):
        jr.lion(1e-3).init(params)


def test_non_array_leaf():
    with pytest.raises(TypeError, match=r"\['x'\] is a str, not an array"):
        jr.sgd(0.1).update({"x": "a"}, jr.sgd(0.1).init({"x": jnp.ones(())}))


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (
            jr.adam,
            {"learning_rate": 1e-3, "b1": 1.0},
            r"b1 must be in \[0, 1\), got 1.0",
        ),
        (jr.adam, {"learning_rate": 1e-3, "b2": -0.1}, r"b2 must be in \[0, 1\)"),
        (jr.adam, {"learning_rate": -1.0}, r"learning_rate must be >= 0, got -1.0"),
        (jr.adam, {"learning_rate": 1e-3, "eps": float("nan")}, r"eps must be >= 0"),
        (jr.sgd, {"learning_rate": 0.1, "momentum": -0.5}, r"momentum must be >= 0"),
        (jr.adagrad, {"learning_rate": 0.1, "eps": -1.0}, r"eps must be >= 0"),
        (jr.lion, {"learning_rate": 0.1, "weight_decay": -1.0}, r"weight_decay"),
        (jr.adam, {"learning_rate": jnp.asarray(2.0), "b1": np.float32(1.5)}, r"b1"),
    ],
)
def test_invalid_concrete_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_traced_hyperparameters_are_not_branched_on():
    """Inside jit the value is unknown, so no check (and no concretization error)."""

    @jax.jit
    def step(b1):
        tx = jr.adam(0.1, b1=b1)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]

    assert step(jnp.asarray(0.5)).shape == (2,)


def test_non_scalar_hyperparameter():
    with pytest.raises(
        ValueError, match=r"learning_rate must be a scalar or a schedule"
    ):
        jr.sgd(jnp.ones(3))


@pytest.mark.parametrize(
    ("dtype", "message"),
    [("int8", r"mu_dtype=int8 is not supported"), ("nope", r"is not a dtype")],
)
def test_bad_storage_dtype(dtype, message):
    with pytest.raises(TypeError, match=message):
        jr.adam(1e-3, mu_dtype=dtype)


def test_dtype_turned_into_an_array_by_inject_hyperparams():
    # Plain optax.inject_hyperparams takes the callable jnp.bfloat16 for a schedule.
    tx = optax.inject_hyperparams(jr.adam)(learning_rate=0.1, mu_dtype=jnp.bfloat16)
    with pytest.raises(TypeError, match=r"static_args=\('mu_dtype',\)"):
        tx.init({"w": jnp.ones(2)})


def test_missing_and_unknown_arguments():
    with pytest.raises(TypeError, match=r"sgd\(\): missing a required argument"):
        jr.sgd()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'beta3'"):
        jr.adam(0.1, beta3=0.5)


def test_rule_function_signature_errors():
    with pytest.raises(TypeError, match=r"may not take \*args or \*\*kwargs"):
        jr.rule(lambda grad, **kw: grad)
    with pytest.raises(TypeError, match=r"positional parameter 'lr' has a default"):
        jr.rule(lambda grad, lr=0.1: grad)
    with pytest.raises(TypeError, match=r"must take the gradient leaf"):
        jr.rule(lambda *, learning_rate: 0.0)
    with pytest.raises(TypeError, match=r"slots \['nu'\] are configured"):
        jr.rule(slots={"nu": jr.Slot()})(lambda grad, mu, *, lr: (grad, mu))
    with pytest.raises(TypeError, match=r"initialised from 'scale'"):
        jr.rule(slots={"mu": jr.Slot(init="scale")})(lambda grad, mu, *, lr: (grad, mu))
    with pytest.raises(TypeError, match=r"static names \['n'\]"):
        jr.rule(static=("n",))(lambda grad, *, lr: grad)
    with pytest.raises(TypeError, match=r"takes 'stats' but no global_stats"):
        jr.rule(lambda grad, stats, *, lr: grad)
    with pytest.raises(ValueError, match=r"cannot parse constraint"):
        jr.rule(constraints={"lr": "between 0 and 1"})(lambda grad, *, lr: grad)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("learning_rate", lambda grad, learning_rate: -learning_rate * grad),
        ("lr", lambda grad, lr: -lr * grad),
        ("momentum", lambda grad, momentum, *, lr: (-lr * grad, momentum)),
        ("b1", lambda grad, mu, b1, *, lr: (-lr * grad, mu, b1)),
        ("beta2", lambda grad, beta2, *, lr: (-lr * grad, beta2)),
        ("eps", lambda grad, eps, *, lr: (-lr * grad, eps)),
        ("weight_decay", lambda grad, weight_decay, *, lr: (-lr * grad, weight_decay)),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_positional_hyperparameter_is_refused(name, fn):
    """``def my_sgd(grad, learning_rate)`` would make the rate a state slot at 0."""
    with pytest.raises(
        TypeError,
        match=rf"positional parameter '{name}' looks like a hyperparameter.*"
        rf"keyword-only, after a bare '\*'",
    ):
        jr.rule(fn)


def test_hyperparameter_named_slot_declared_with_slots_is_a_slot():
    @jr.rule(slots={"momentum": jr.Slot()})
    def heavy(grad, momentum, *, learning_rate):
        momentum = 0.9 * momentum + grad
        return -learning_rate * momentum, momentum

    state = heavy(0.1).init(jnp.zeros(2))
    assert state._fields == ("count", "momentum")


@pytest.mark.parametrize(
    ("slot", "fn"),
    [
        ("count", lambda grad, count, *, lr: (grad, count)),
        ("rounding_key", lambda grad, rounding_key, *, lr: (grad, rounding_key)),
        ("hyperparams", lambda grad, hyperparams, *, lr: (grad, hyperparams)),
        ("inner_state", lambda grad, inner_state, *, lr: (grad, inner_state)),
        ("_private", lambda grad, _private, *, lr: (grad, _private)),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_slot_named_like_a_state_field_is_refused(slot, fn):
    with pytest.raises(TypeError, match=rf"slot '{slot}' (is named like|starts with)"):
        jr.rule(fn)


def test_dtype_argument_clashes_name_both_sides():
    with pytest.raises(
        TypeError,
        match=r"dtype argument 'mu_dtype' of slot 'mu' clashes with the "
        r"hyperparameter 'mu_dtype'",
    ):
        jr.rule(lambda grad, mu, *, lr, mu_dtype=0.5: (grad, mu))
    with pytest.raises(
        TypeError,
        match=r"slots 'a' and 'b' share the dtype argument 'ab_dtype' with "
        r"different defaults",
    ):
        jr.rule(
            slots={
                "a": jr.Slot(dtype_arg="ab_dtype"),
                "b": jr.Slot(dtype_arg="ab_dtype", dtype_default=jnp.float32),
            }
        )(lambda grad, a, b, *, lr: (grad, a, b))
    with pytest.raises(TypeError, match=r"dtype argument 'rounding_seed' of slot 'a'"):
        jr.rule(slots={"a": jr.Slot(dtype_arg="rounding_seed")})(
            lambda grad, a, *, lr: (grad, a)
        )
    with pytest.raises(TypeError, match=r"'class', which is not a valid Python"):
        jr.rule(slots={"a": jr.Slot(dtype_arg="class")})(
            lambda grad, a, *, lr: (grad, a)
        )


def test_rule_function_return_errors():
    tx = jr.rule(lambda grad, mu, *, lr: grad)(lr=0.1)
    with pytest.raises(TypeError, match=r"must return \(update, mu\)"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    tx = jr.rule(lambda grad, *, lr: jnp.sum(grad))(lr=0.1)
    with pytest.raises(ValueError, match=r"update for <root> has shape \(\)"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_mask_that_is_not_a_prefix():
    tx = jr.adamw(0.1, mask={"enc": True})
    with pytest.raises(
        ValueError, match=r"mask must be a pytree prefix of the gradients"
    ):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
