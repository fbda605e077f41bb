"""The conformance kit can fail: each check rejects a rule broken its way.

Every broken rule below is a small, realistic mistake. Each check must raise a
ConformanceError that names the check.
"""

import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing


class _State(NamedTuple):
    count: jax.Array
    mu: Any


def _momentum(
    learning_rate: float = 0.01,
    *,
    scale_fn=lambda g: g,
    init_fn=None,
    store_dtype=None,
    update_dtype=None,
    map_is_leaf=None,
    extra_args: bool = True,
) -> optax.GradientTransformation:
    """A hand-written momentum SGD with hooks to break it in one place."""

    def init(params):
        if init_fn is not None:
            return init_fn(params)
        return _State(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None, **kw):
        mu = jax.tree.map(lambda g, m: 0.9 * m + scale_fn(g), updates, state.mu)
        new = jax.tree.map(lambda m: -learning_rate * m, mu, is_leaf=map_is_leaf)
        if update_dtype is not None:
            new = jax.tree.map(lambda u: u.astype(update_dtype), new)
        if store_dtype is not None:
            mu = jax.tree.map(lambda m: m.astype(store_dtype), mu)
        return new, _State(state.count + 1, mu)

    if extra_args:
        return optax.GradientTransformationExtraArgs(init, update)

    def update_without_extra_args(updates, state, params=None):
        return update(updates, state, params)

    return optax.GradientTransformationExtraArgs(init, update_without_extra_args)


_trace_counter = itertools.count()


def _side_effect(g):
    # A Python side effect: runs when traced, not on every step under jit.
    return g * (1.0 + 0.1 * next(_trace_counter))


def _host_sign(g):
    return jax.pure_callback(
        lambda x: np.sign(x), jax.ShapeDtypeStruct(g.shape, g.dtype), g
    )


def _concrete_init(params):
    return _State(
        jnp.zeros([], jnp.int32),
        jax.tree.map(lambda p: jnp.asarray(np.zeros(np.shape(np.asarray(p)))), params),
    )


def _shape_read_init(params):
    leaves = jax.tree.leaves(params)
    zeros = [jnp.zeros(p.shape, p.dtype) for p in leaves]
    zeros[0] = zeros[0] + 0  # built outside a tree map: tree_map_params can't see it
    return _State(jnp.zeros([], jnp.int32), {"all": zeros})


def _schedule_read_once(learning_rate=0.01):
    lr = learning_rate(0) if callable(learning_rate) else learning_rate
    return _momentum(lr)


def _ascent(learning_rate=0.01):
    return _momentum(-learning_rate)


def _python_branch(learning_rate=0.01):
    if learning_rate > 0.5:  # concretizes a traced value under inject_hyperparams
        raise ValueError("too large")
    return _momentum(learning_rate)


def _drops_imaginary_part():
    """Accepts complex parameters but steps along the real part only."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(
            lambda g: (-0.01 * jnp.real(g)).astype(g.dtype), updates
        ), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


BROKEN = {
    "structure_and_dtypes": lambda: _momentum(update_dtype=jnp.float32),
    "jit_matches_eager": lambda: _momentum(scale_fn=_side_effect),
    "no_recompile": lambda: _momentum(store_dtype=jnp.bfloat16),
    "cond_state_types": lambda: _momentum(store_dtype=jnp.bfloat16),
    "chain": lambda: _momentum(scale_fn=_side_effect),
    "masked": lambda: _momentum(map_is_leaf=lambda x: isinstance(x, tuple)),
    "partition": lambda: _momentum(map_is_leaf=lambda x: isinstance(x, tuple)),
    "multi_steps": lambda: _momentum(scale_fn=_side_effect),
    "apply_if_finite": lambda: _momentum(store_dtype=jnp.bfloat16),
    "inject_hyperparams": _python_branch,
    "extra_args": lambda: _momentum(extra_args=False),
    "init_abstract": lambda: _momentum(init_fn=_concrete_init),
    "tree_map_params": lambda: _momentum(init_fn=_shape_read_init),
    "vmap": lambda: _momentum(scale_fn=_host_sign),
    "scan": lambda: _momentum(scale_fn=_side_effect),
    "schedule": _schedule_read_once,
    "converges_parabola": _ascent,
    "converges_rosenbrock": _ascent,
    "sharding": lambda: optax.sgd(0.01, momentum=0.9),
    "names_bad_leaves": lambda: optax.sgd(0.01, momentum=0.9),
    "complex_params": _drops_imaginary_part,
}


def test_every_check_has_a_broken_rule():
    assert set(BROKEN) == set(testing.CHECKS)


@pytest.mark.parametrize("check", list(testing.CHECKS))
def test_check_rejects_broken_rule(check):
    factory = BROKEN[check]
    hyperparams = (
        {"learning_rate": 0.001}
        if check
        in (
            "inject_hyperparams",
            "schedule",
            "converges_parabola",
            "converges_rosenbrock",
        )
        else {}
    )
    with pytest.raises(testing.ConformanceError, match=rf"^\[{check}\]"):
        testing.run_check(check, factory, hyperparams)


def test_check_rule_reports_every_failure_with_its_name():
    with pytest.raises(testing.ConformanceError) as info:
        testing.check_rule(lambda: _momentum(store_dtype=jnp.bfloat16))
    message = str(info.value)
    for check in ("no_recompile", "cond_state_types", "apply_if_finite"):
        assert f"[{check}]" in message


def test_failure_names_the_leaf_path():
    with pytest.raises(
        testing.ConformanceError, match=r"at \['conv'\]\[0\]: dtype float32"
    ):
        testing.run_check(
            "structure_and_dtypes", lambda: _momentum(update_dtype=jnp.float32)
        )


def test_unknown_check_name():
    with pytest.raises(KeyError, match="unknown check"):
        testing.run_check("nope", jr.sgd, {"learning_rate": 0.1})


def test_sharding_check_reports_not_run_on_one_device(monkeypatch):
    monkeypatch.setattr(jax, "devices", lambda: jax.local_devices()[:1])
    assert testing.run_check("sharding", jr.sgd, {"learning_rate": 0.1}) is False
