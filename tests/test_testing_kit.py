"""The conformance kit can fail: each check rejects a rule broken its way.

Every broken rule below is a small, realistic mistake. Each check must raise a
ConformanceError that names the check.
"""

import contextvars
import itertools
import pathlib
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


# ---------------------------------------------------------------------------
# The kit's layout: one job per module, problems without hidden global state.

KIT = pathlib.Path(testing.__file__).parent
_KIT_OWN = sorted(
    p
    for p in KIT.rglob("*.py")
    if p.name not in ("_compare.py", "_reference.py")  # another module's helpers
)


def test_checks_live_in_modules_by_theme():
    modules = {name: check.__module__ for name, check in testing.CHECKS.items()}
    assert modules["sharding"] == "jaxopt_rules.testing._checks.sharding"
    assert modules["converges_rosenbrock"] == "jaxopt_rules.testing._checks.convergence"
    assert modules["chain"] == "jaxopt_rules.testing._checks.composition"
    assert modules["vmap"] == "jaxopt_rules.testing._checks.transforms"
    assert modules["schedule"] == "jaxopt_rules.testing._checks.hyperparams"
    assert modules["complex_params"] == "jaxopt_rules.testing._checks.inputs"
    assert modules["no_recompile"] == "jaxopt_rules.testing._checks.structure"
    for path in _KIT_OWN:
        lines = len(path.read_text().splitlines())
        assert lines <= 320, f"{path.name} has {lines} lines"


def test_kit_imports_the_core_from_its_package_and_has_no_duck_typing():
    for path in _KIT_OWN:
        text = path.read_text()
        assert "jaxopt_rules._core." not in text, path.name
        assert "hasattr(" not in text, path.name
    sharding = (KIT / "_checks" / "sharding.py").read_text()
    assert "is_leaf=is_quantized" in sharding


def test_problems_take_matrices_only_explicitly():
    from jaxopt_rules.testing import _problems

    assert not any(
        isinstance(v, contextvars.ContextVar) for v in vars(_problems).values()
    )
    matrices = testing.example_params(matrices_only=True)
    assert all(jnp.ndim(x) == 2 for x in jax.tree.leaves(matrices))
    assert jax.tree.structure(matrices) == jax.tree.structure(testing.example_params())
    start, solution, _ = testing.parabola(matrices_only=True)
    assert start.shape == solution.shape == (3, 1)
    assert testing.rosenbrock(matrices_only=True)[0].shape == (2, 1)
    rule = testing.RuleUnderTest(jr.sgd, {}, matrices_only=True)
    assert rule.params()["dense"]["b"].shape == (1, 4)
    assert testing.RuleUnderTest(jr.sgd, {}).params()["dense"]["b"].shape == (4,)


def test_matrices_only_reaches_every_check():
    # A rule that refuses any leaf that is not a matrix passes every check
    # with matrices_only=True: no check builds a problem of another shape.
    def matrices(learning_rate=0.01):
        inner = optax.sgd(learning_rate, momentum=0.9)

        def init(params):
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
                if jnp.ndim(leaf) != 2:
                    raise TypeError(f"{jax.tree_util.keystr(path)} is not a matrix")
            return inner.init(params)

        return optax.GradientTransformation(init, inner.update)

    with pytest.raises(testing.ConformanceError):
        testing.run_check("vmap", matrices, {"learning_rate": 0.01})
    assert testing.run_check(
        "vmap", matrices, {"learning_rate": 0.01}, matrices_only=True
    )
    # (optax's SGD fails four checks of its own: complex parameters,
    # Rosenbrock at this learning rate, sharding and names_bad_leaves.)
    theirs = ("complex_params", "converges_rosenbrock", "sharding", "names_bad_leaves")
    report = testing.check_rule(
        matrices, {"learning_rate": 0.01}, matrices_only=True, skip=theirs
    )
    assert len(report) == len(testing.CHECKS) - len(theirs)


# ---------------------------------------------------------------------------
# Reporting: what ran, what did not and why; convergence failures explained.


def test_check_count_is_what_the_docstrings_say():
    count = len(testing.CHECKS)
    assert count == 21
    assert f"runs the {count} checks of" in " ".join((testing.__doc__ or "").split())
    assert f"({count} of them)" in (testing.check_rule.__doc__ or "")


def test_check_rule_reports_a_skipped_check_and_how_to_enable_it(monkeypatch, capsys):
    monkeypatch.setattr(jax, "devices", lambda: jax.local_devices()[:1])
    report = testing.check_rule(jr.sgd, {"learning_rate": 1e-3, "momentum": 0.9})
    assert "sharding" not in report
    assert len(report) == len(testing.CHECKS) - 1
    assert set(report.skipped) == {"sharding"}
    assert 'jax.config.update("jax_num_cpu_devices", 8)' in report.skipped["sharding"]
    text = str(report)
    assert "20 of 21 conformance checks passed; 1 not run" in text
    assert "sharding: needs at least 2 devices" in text
    assert "check 'sharding' not run" in capsys.readouterr().err


def test_check_rule_reports_checks_skipped_by_name():
    report = testing.check_rule(
        jr.sgd, {"learning_rate": 0.1}, skip=tuple(set(testing.CHECKS) - {"chain"})
    )
    assert list(report) == ["chain"]
    assert report.skipped["sharding"] == "skipped as asked (skip=)"
    with pytest.raises(KeyError, match="unknown checks in skip"):
        testing.check_rule(jr.sgd, {"learning_rate": 0.1}, skip=("nope",))


def test_schedule_check_says_why_it_did_not_run():
    report = testing.check_rule(
        lambda: optax.sgd(0.01), skip=tuple(set(testing.CHECKS) - {"schedule"})
    )
    assert "numeric 'learning_rate' hyperparameter" in report.skipped["schedule"]


def test_convergence_failure_of_a_rule_stepping_uphill():
    with pytest.raises(testing.ConformanceError) as info:
        testing.run_check(
            "converges_parabola", _ascent, {"learning_rate": 0.001}, steps=100
        )
    message = str(info.value)
    assert "started at x0=[-1.0, 10.0, 1.0] (loss 125)" in message
    assert "x*=[1.0, -1.0, 1.0]" in message
    assert "after 100 steps at learning_rate=0.001 it reached x=" in message
    assert "the loss grew from 125" in message
    assert "check the update's sign, or lower learning_rate (now 0.001)" in message


def test_convergence_failure_of_a_rule_too_slow_says_raise_or_more_steps():
    with pytest.raises(testing.ConformanceError) as info:
        testing.run_check(
            "converges_rosenbrock", jr.sgd, {"learning_rate": 1e-4}, steps=100
        )
    message = str(info.value)
    assert "after 100 steps at learning_rate=0.0001 it reached x=" in message
    assert "distance" in message
    assert "the loss fell from 1 but not to the minimum" in message
    assert "raise learning_rate (now 0.0001) or allow more steps (steps=200" in message


def test_convergence_failure_of_a_diverging_rule_names_the_step():
    with pytest.raises(testing.ConformanceError) as info:
        testing.run_check("converges_parabola", jr.sgd, {"learning_rate": 10.0})
    message = str(info.value)
    assert "a non-finite loss at step" in message
    assert "lower learning_rate (now 10.0)" in message


def test_convergence_failure_speaks_torch_lr():
    from jaxopt_rules import torch_compat

    with pytest.raises(testing.ConformanceError, match=r"lower lr \(now 50.0\)"):
        testing.run_check("converges_parabola", torch_compat.sgd, {"lr": 50.0})


# ---------------------------------------------------------------------------
# Speed: the checks of one check_rule call share compiled programs.


def _count_compiles(fn):
    # JAX records this event for a program loaded from the persistent
    # compilation cache (conftest.py) too: it counts the programs fn needed.
    count = 0

    def listener(event, duration, **kwargs):
        nonlocal count
        if event == "/jax/core/compile/backend_compile_duration":
            count += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return count


def test_check_rule_compiles_each_shared_program_once():
    # Warm: JAX's per-primitive programs (the eager run) and the kit's shared
    # ones (the example loss's gradient) are compiled by the first call.
    testing.check_rule(jr.adam, {"learning_rate": 0.01})
    compiles = _count_compiles(
        lambda: testing.check_rule(jr.adam, {"learning_rate": 0.02})
    )
    # One program per check that needs its own (schedules: 3, sharding: 5,
    # the rule's step in float32, bfloat16 and on the masked subtree, ...);
    # the 21 checks run one by one compile about 40.
    assert compiles <= 24, compiles


# Rules that read the loss: update(..., value=...).


def test_kit_refuses_update_args_it_cannot_compute():
    with pytest.raises(
        ValueError, match=r"cannot compute the update arguments \['hessian'\]"
    ):
        testing.run_check(
            "chain", jr.sgd, {"learning_rate": 0.1}, update_args=("hessian",)
        )


def test_with_update_args_computes_the_loss_and_lets_the_caller_override():
    @jr.rule(extra_args=("value",))
    def value_scaled(grad, value, *, learning_rate):
        return -learning_rate * value * grad

    params = {"w": jnp.array([1.0, 2.0])}
    grads = {"w": jnp.ones(2)}
    tx = testing.with_update_args(
        value_scaled(0.5), ("value",), lambda p: jnp.sum(p["w"])
    )
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-1.5, -1.5])
    updates, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(4.0))
    np.testing.assert_allclose(updates["w"], [-2.0, -2.0])
    with pytest.raises(ValueError, match="update needs params"):
        tx.update(grads, tx.init(params))


def test_kit_feeds_the_problem_loss_to_a_rule_that_reads_it():
    """A Polyak step on the kit's problems converges only with the right loss."""

    @jr.rule(extra_args=("value",), global_stats=lambda g: {"sq": jnp.sum(g * g)})
    def polyak(grad, value, stats, *, learning_rate=1.0):
        return -learning_rate * value / jnp.maximum(stats["sq"], 1e-30) * grad

    report = testing.check_rule(polyak, {"learning_rate": 0.5}, skip=("sharding",))
    assert len(report) == len(testing.CHECKS) - 1
