"""The catalog's rules in real training code: flax (linen and NNX), equinox, orbax.

No mocks: each test trains a small model with the framework's own training
utilities, for every drop-in of the catalog.

* flax linen: a ``TrainState`` checkpointed with ``flax.serialization``
  (``to_bytes`` / ``from_bytes``) continues bit-identically.
* flax NNX: ``nnx.Optimizer(model, <rule>, wrt=nnx.Param)`` follows the same
  run with the optax optimizer (float64, 10 steps, parameters within 1e-12
  relative, the tolerance of ``tests/test_reference.py``).
* equinox: ``eqx.filter``-ed parameters updated by a rule follow optax's run
  (float64, 10 steps, 1e-12 relative).
* orbax: a state restored into ``jax.eval_shape(tx.init, params)`` has the
  rule's own state classes and continues bit-identically, for every option set
  of each rule's reference (the authors' option sets, for a rule optax lacks).
"""

from typing import Any

import equinox as eqx
import flax.linen as linen
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from flax.training import train_state
from helpers import DROP_INS, build, build_reference

import jaxopt_rules as jr
from jaxopt_rules import testing


SPECS = [pytest.param(spec, id=spec.name) for spec in jr.REGISTRY]
FOLLOWERS = [pytest.param(spec, id=spec.name) for spec in DROP_INS]
# Every option set of the reference (for a drop-in) or of the authors' code:
# the options that change the state's structure are among them.
CASES = [
    pytest.param(spec, i, id=f"{spec.name}-{i}")
    for spec in jr.REGISTRY
    for i in range(len(spec.reference_cases or spec.cases))
]


def _data(dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (32, 4), dtype)
    y = jnp.sin(x.sum(axis=1, keepdims=True)) + 0.1 * jax.random.normal(
        ky, (32, 1), dtype
    )
    return x, y


def _pair(spec: Any, dtype: Any) -> tuple[Any, Any]:
    """The rule and its reference with the first reference case's options."""
    kwargs = testing.reference_arguments(
        spec.factory, spec.reference_factory, spec.reference_cases[0], dtype
    )
    return build(spec.factory, **kwargs), build_reference(spec, **kwargs)


def _assert_identical(actual: Any, expected: Any) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


# -- flax linen: TrainState and flax.serialization ---------------------------


class _MLP(linen.Module):
    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return linen.Dense(1)(jnp.tanh(linen.Dense(8)(x)))


@jax.jit
def _linen_step(state: train_state.TrainState, x: jax.Array, y: jax.Array) -> Any:
    def loss(params: Any) -> jax.Array:
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    return state.apply_gradients(grads=jax.grad(loss)(state.params))


@pytest.mark.parametrize("spec", SPECS)
def test_linen_train_state_checkpoint_continues_bit_identically(spec):
    x, y = _data()
    model = _MLP()

    def loss(params: Any) -> jax.Array:
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    # apply_gradients passes no loss: a rule that reads it gets it this way.
    tx = testing.with_update_args(
        build(spec.factory, **spec.hyperparams), spec.update_args, loss
    )

    def fresh() -> train_state.TrainState:
        params = model.init(jax.random.key(1), x)["params"]
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    state = fresh()
    for _ in range(3):
        state = _linen_step(state, x, y)
    restored = flax.serialization.from_bytes(
        fresh(), flax.serialization.to_bytes(state)
    )
    assert type(restored.opt_state) is type(state.opt_state)
    _assert_identical(restored.opt_state, state.opt_state)
    assert int(restored.step) == 3
    for _ in range(3):
        state = _linen_step(state, x, y)
        restored = _linen_step(restored, x, y)
    _assert_identical(restored.params, state.params)
    _assert_identical(restored.opt_state, state.opt_state)


# -- flax NNX: nnx.Optimizer ---------------------------------------------------


class _NnxModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        dtype = jnp.float64
        self.hidden = nnx.Linear(4, 8, param_dtype=dtype, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(8, 1, param_dtype=dtype, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.hidden(x)))


def _nnx_params_after(
    tx: optax.GradientTransformation, steps: int, update_args: tuple[str, ...]
) -> Any:
    x, y = _data(jnp.float64)
    model = _NnxModel(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model: _NnxModel, optimizer: nnx.Optimizer) -> None:
        def loss(model: _NnxModel) -> jax.Array:
            return jnp.mean((model(x) - y) ** 2)

        value, grads = nnx.value_and_grad(loss)(model)
        extra = {"value": value} if "value" in update_args else {}
        if "grad" in update_args:
            extra["grad"] = grads
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        # functions of the Param state nnx passes
        extra |= testing.loss_functions(
            update_args, lambda p: loss(nnx.merge(graphdef, p, rest))
        )
        optimizer.update(model, grads, **extra)

    for _ in range(steps):
        step(model, optimizer)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _assert_follows_optax(spec: Any, params_after: Any) -> None:
    """10 float64 steps of the drop-in land within 1e-12 of optax's, and move."""
    with jax.enable_x64(True):
        ours, ref = _pair(spec, np.float64)
        start = params_after(ref, 0, spec.update_args)
        expected = params_after(ref, 10, spec.update_args)
        actual = params_after(ours, 10, spec.update_args)
    assert testing.relative_error(actual, start) > 1e-4  # it trained
    assert testing.relative_error(actual, expected) <= 1e-12


@pytest.mark.parametrize("spec", FOLLOWERS)
def test_nnx_optimizer_follows_optax(spec):
    _assert_follows_optax(spec, _nnx_params_after)


# -- equinox: eqx.filter'ed parameters -----------------------------------------


def _eqx_params_after(
    tx: optax.GradientTransformation, steps: int, update_args: tuple[str, ...]
) -> Any:
    x, y = _data(jnp.float64)
    model = eqx.nn.MLP(4, 1, 8, 2, key=jax.random.key(0), dtype=jnp.float64)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model: eqx.nn.MLP, opt_state: Any) -> tuple[eqx.nn.MLP, Any]:
        def loss(model: eqx.nn.MLP) -> jax.Array:
            return jnp.mean((jax.vmap(model)(x) - y) ** 2)

        value, grads = eqx.filter_value_and_grad(loss)(model)
        params, static = eqx.partition(model, eqx.is_array)
        extra = {"value": value} if "value" in update_args else {}
        if "grad" in update_args:
            extra["grad"] = grads
        extra |= testing.loss_functions(
            update_args, lambda p: loss(eqx.combine(p, static))
        )
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        return eqx.apply_updates(model, updates), opt_state

    for _ in range(steps):
        model, opt_state = step(model, opt_state)
    return eqx.filter(model, eqx.is_array)


@pytest.mark.parametrize("spec", FOLLOWERS)
def test_equinox_training_follows_optax(spec):
    _assert_follows_optax(spec, _eqx_params_after)


# -- orbax: restore into jax.eval_shape(tx.init, params) -----------------------


@pytest.mark.parametrize(("spec", "case"), CASES)
def test_orbax_restore_into_abstract_state_continues_bit_identically(
    spec, case, tmp_path
):
    kwargs = testing.reference_arguments(
        spec.factory,
        spec.reference_factory or spec.factory,
        (spec.reference_cases or spec.cases)[case],
    )
    tx = testing.with_update_args(build(spec.factory, **kwargs), spec.update_args)
    params = testing.example_params()

    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        updates, state = tx.update(testing.example_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(3):
        params, state = step(params, state)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(
            tmp_path / "state", jax.eval_shape(tx.init, params)
        )
    assert type(restored) is type(state)
    _assert_identical(restored, state)
    continued, expected = (params, restored), (params, state)
    for _ in range(3):
        continued, expected = step(*continued), step(*expected)
    _assert_identical(continued, expected)
