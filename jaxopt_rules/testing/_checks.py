"""The conformance checks: what every optimizer rule must do to be trusted.

Each check takes a :class:`RuleUnderTest` (a factory and hyperparameters) and
raises :class:`ConformanceError`, naming the check and the leaf path, when the
rule falls short. The checks only use the optax protocol, so they apply to any
factory of ``optax.GradientTransformation``, not only to rules of this package.
"""

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxopt_rules._core import abs_sq
from jaxopt_rules.testing._compare import (
    ConformanceError,
    assert_all_zero,
    assert_same_shapes_and_dtypes,
    assert_trees_close,
    fail,
)
from jaxopt_rules.testing._problems import (
    Problem,
    example_grads,
    example_params,
    matrices_only as _matrix_problems,
    matrices_only_active,
    parabola,
    rosenbrock,
)


# Two runs of the same float32 arithmetic compiled in different programs may
# round differently (fusion, FMA contraction); a few ulps over a few steps.
RTOL = 1e-6
ATOL = 1e-7


class CheckSkipped(Exception):
    """A check does not apply to this rule or this machine (with the reason)."""


@dataclasses.dataclass(frozen=True)
class RuleUnderTest:
    """A rule factory with the hyperparameters to check it with.

    Attributes:
        factory: a callable returning an ``optax.GradientTransformation``.
        hyperparams: keyword arguments for ``factory``; they must make the rule
            converge on the parabola and Rosenbrock problems in ``steps`` steps.
        static_args: passed to ``optax.inject_hyperparams`` (default: the
            factory's ``static_args`` attribute, if any).
        steps: steps allowed for the convergence checks.
    """

    factory: Callable[..., optax.GradientTransformation]
    hyperparams: Mapping[str, Any]
    static_args: tuple[str, ...] = ()
    steps: int = 10_000

    def make(self, **overrides: Any) -> optax.GradientTransformationExtraArgs:
        """The transform with ``overrides`` applied to the hyperparameters."""
        return optax.with_extra_args_support(
            self.factory(**{**self.hyperparams, **overrides})
        )

    @property
    def learning_rate_name(self) -> str:
        """The learning rate's argument name: optax's, or torch's ``lr``."""
        try:
            parameters = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return "learning_rate"
        if "learning_rate" not in parameters and "lr" in parameters:
            return "lr"
        return "learning_rate"

    @property
    def learning_rate(self) -> Any:
        """The learning-rate hyperparameter (its default when not given)."""
        name = self.learning_rate_name
        if name in self.hyperparams:
            return self.hyperparams[name]
        try:
            parameter = inspect.signature(self.factory).parameters[name]
        except (KeyError, TypeError, ValueError):
            return None
        return None if parameter.default is parameter.empty else parameter.default


def _run(
    tx: optax.GradientTransformationExtraArgs,
    params: Any,
    steps: int,
    *,
    jit: bool = True,
    **extra_args: Any,
) -> list[tuple[Any, Any, Any]]:
    """``steps`` updates on the example loss: [(updates, state, params)]."""

    def step(params: Any, state: Any) -> tuple[Any, Any, Any]:
        updates, state = tx.update(example_grads(params), state, params, **extra_args)
        return updates, state, optax.apply_updates(params, updates)

    step_fn = jax.jit(step) if jit else step
    state = tx.init(params)
    out = []
    for _ in range(steps):
        updates, state, params = step_fn(params, state)
        out.append((updates, state, params))
    return out


def _only(tree: Any, paths: set[str]) -> Any:
    """``tree`` with every leaf not at one of ``paths`` replaced by ``None``."""
    return jax.tree.map_with_path(
        lambda path, x: x if jax.tree_util.keystr(path) in paths else None, tree
    )


def _pick(tree: Any, paths: set[str]) -> dict[str, Any]:
    """The leaves of ``tree`` at ``paths``, keyed by path."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(p): x
        for p, x in leaves
        if jax.tree_util.keystr(p) in paths
    }


# The example tree split in two: the rule's leaves and the others.
_SELECTED = {"['dense']['w']", "['conv'][0]"}
_OTHERS = {"['dense']['b']", "['scale']"}


def _assert_parts(
    check: str,
    what: str,
    got: Any,
    want_selected: Any,
    want_others: Any,
    *,
    other_rtol: float,
) -> None:
    """Compares the selected leaves and the other leaves of ``got`` separately."""
    assert_trees_close(
        check,
        f"{what} (rule leaves)",
        _pick(got, _SELECTED),
        _pick(want_selected, _SELECTED),
        rtol=RTOL,
        atol=ATOL,
    )
    assert_trees_close(
        check,
        f"{what} (other leaves)",
        _pick(got, _OTHERS),
        _pick(want_others, _OTHERS),
        rtol=other_rtol,
        atol=ATOL if other_rtol else 0.0,
    )


# ---------------------------------------------------------------------------
# Checks


def check_structure_and_dtypes(rule: RuleUnderTest) -> None:
    """Updates keep the gradients' tree, shapes and dtypes; state keeps its own."""
    for dtype in (jnp.float32, jnp.bfloat16):
        params = example_params(dtype)
        tx = rule.make()
        state = tx.init(params)
        grads = example_grads(params)
        updates, new_state = jax.jit(tx.update)(grads, state, params)
        name = f"{jnp.dtype(dtype).name} updates"
        assert_same_shapes_and_dtypes("structure_and_dtypes", name, updates, grads)
        assert_same_shapes_and_dtypes(
            "structure_and_dtypes", f"{jnp.dtype(dtype).name} state", new_state, state
        )
        new_params = optax.apply_updates(params, updates)
        assert_same_shapes_and_dtypes(
            "structure_and_dtypes",
            f"{jnp.dtype(dtype).name} params",
            new_params,
            params,
        )


def check_jit_matches_eager(rule: RuleUnderTest) -> None:
    """Three jitted steps give the numbers of three eager steps."""
    params = example_params()
    eager = _run(rule.make(), params, 3, jit=False)
    jitted = _run(rule.make(), params, 3, jit=True)
    for i, ((ue, se, _), (uj, sj, _)) in enumerate(zip(eager, jitted, strict=True)):
        assert_trees_close(
            "jit_matches_eager", f"step {i + 1} updates", uj, ue, rtol=RTOL, atol=ATOL
        )
        assert_trees_close(
            "jit_matches_eager", f"step {i + 1} state", sj, se, rtol=RTOL, atol=ATOL
        )


def check_no_recompile(rule: RuleUnderTest) -> None:
    """A jitted, donated step is traced once and reused on later steps."""
    tx = rule.make()
    traces = 0

    def step(params: Any, state: Any) -> tuple[Any, Any]:
        nonlocal traces
        traces += 1
        updates, state = tx.update(example_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    step_fn = jax.jit(step, donate_argnums=(0, 1))
    params = example_params()
    state = tx.init(params)
    for _ in range(3):
        params, state = step_fn(params, state)
    jax.block_until_ready(params)
    if traces != 1:
        raise fail("no_recompile", f"the step was traced {traces} times in 3 calls")


def check_cond_state_types(rule: RuleUnderTest) -> None:
    """``lax.cond`` between ``update`` and a no-op accepts identical state types."""
    tx = rule.make()
    for dtype in (jnp.float32, jnp.bfloat16):
        params = example_params(dtype)
        state = tx.init(params)
        grads = example_grads(params)

        def maybe_update(
            pred: jax.Array, grads: Any, state: Any, params: Any
        ) -> tuple[Any, Any]:
            return jax.lax.cond(
                pred,
                lambda: tx.update(grads, state, params),
                lambda: (grads, state),
            )

        try:
            jax.jit(maybe_update)(jnp.array(True), grads, state, params)
        except TypeError as error:
            raise fail(
                "cond_state_types",
                f"{jnp.dtype(dtype).name}: update changes the types of the updates "
                f"or the state (dtype, weak type or structure): {error}",
            ) from None


def check_chain(rule: RuleUnderTest) -> None:
    """Inside ``optax.chain`` the rule gives the same trajectory as alone."""
    params = example_params()
    alone = _run(rule.make(), params, 3)
    chained = _run(
        optax.chain(optax.identity(), rule.make(), optax.scale(1.0)), params, 3
    )
    for i, ((ua, _, _), (uc, _, _)) in enumerate(zip(alone, chained, strict=True)):
        assert_trees_close(
            "chain", f"step {i + 1} updates", uc, ua, rtol=RTOL, atol=ATOL
        )


def check_masked(rule: RuleUnderTest) -> None:
    """``optax.masked`` applies the rule to the selected leaves only."""
    params = example_params()
    mask = jax.tree.map_with_path(
        lambda path, _: jax.tree_util.keystr(path) in _SELECTED, params
    )
    tx = optax.masked(rule.make(), mask)
    grads = example_grads(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    # Expected: the rule alone on the selected leaves; the rest passed through.
    sub_params = _only(params, _SELECTED)
    sub_tx = rule.make()
    sub_updates, _ = jax.jit(sub_tx.update)(
        example_grads(sub_params), sub_tx.init(sub_params), sub_params
    )
    _assert_parts("masked", "updates", updates, sub_updates, grads, other_rtol=0)


def check_partition(rule: RuleUnderTest) -> None:
    """In ``optax.partition`` the rule's leaves follow the rule, the others SGD."""
    params = example_params()
    labels = jax.tree.map_with_path(
        lambda path, _: "rule" if jax.tree_util.keystr(path) in _SELECTED else "sgd",
        params,
    )
    tx = optax.partition({"rule": rule.make(), "sgd": optax.sgd(0.1)}, labels)
    joint = _run(tx, params, 3)
    # The example loss is separable, so each part evolves on its own.
    rule_part = _run(rule.make(), _only(params, _SELECTED), 3)
    sgd_part = _run(optax.sgd(0.1), _only(params, _OTHERS), 3)
    for i in range(3):
        _assert_parts(
            "partition",
            f"step {i + 1} updates",
            joint[i][0],
            rule_part[i][0],
            sgd_part[i][0],
            other_rtol=RTOL,
        )


def check_multi_steps(rule: RuleUnderTest) -> None:
    """``optax.MultiSteps``: zero updates until the k-th, then the mean's update."""
    k = 3
    for dtype in (jnp.float32, jnp.bfloat16):
        params = example_params(dtype)
        tx = optax.MultiSteps(rule.make(), every_k_schedule=k)
        state = tx.init(params)
        update = jax.jit(tx.update)
        grads = [
            jax.tree.map(lambda g, i=i: g * (1.0 + 0.5 * i), example_grads(params))
            for i in range(k)
        ]
        for i in range(k - 1):
            updates, state = update(grads[i], state, params)
            assert_all_zero(
                "multi_steps", f"{jnp.dtype(dtype).name} update {i + 1}", updates
            )
        updates, state = update(grads[-1], state, params)
        if dtype == jnp.float32:
            mean = jax.tree.map(lambda *g: sum(g) / k, *grads)
            inner = rule.make()
            expected, _ = jax.jit(inner.update)(mean, inner.init(params), params)
            assert_trees_close(
                "multi_steps",
                f"update {k} (mean of {k} gradients)",
                updates,
                expected,
                rtol=1e-5,
                atol=1e-6,
            )


def check_apply_if_finite(rule: RuleUnderTest) -> None:
    """``optax.apply_if_finite`` rejects a NaN step and keeps the inner state."""
    params = example_params()
    tx = optax.apply_if_finite(rule.make(), max_consecutive_errors=3)
    state: Any = tx.init(params)
    grads = example_grads(params)
    bad = {**grads, "scale": jnp.full_like(grads["scale"], jnp.nan)}
    update = jax.jit(tx.update)
    updates, new_state = update(bad, state, params)
    new_state = cast(Any, new_state)
    assert_all_zero("apply_if_finite", "update after a NaN gradient", updates)
    assert_trees_close(
        "apply_if_finite",
        "inner state after a NaN gradient",
        new_state.inner_state,
        state.inner_state,
        rtol=0,
    )
    updates, _ = update(grads, new_state, params)
    plain = rule.make()
    expected, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    assert_trees_close(
        "apply_if_finite",
        "first finite update",
        updates,
        expected,
        rtol=RTOL,
        atol=ATOL,
    )


def check_inject_hyperparams(rule: RuleUnderTest) -> None:
    """Under ``optax.inject_hyperparams`` every step computes the same update.

    Teacher-forced: at each of 4 steps both transforms get the same gradients,
    parameters and inner state (the plain run's), so the comparison measures
    the step's formula. (Free-running, a last-ulp difference between two
    compiled programs, such as XLA:CPU vectorising a fused ``cos`` of the
    gradient differently, grows over the steps on this problem: to 1.7e-6
    relative after 4 Adagrad steps at ``learning_rate=1.0``, for optax's own
    Adagrad too.)
    """
    params = example_params()
    try:
        injected = optax.inject_hyperparams(rule.factory, static_args=rule.static_args)(
            **rule.hyperparams
        )
    except TypeError as error:
        raise fail("inject_hyperparams", f"wrapping failed: {error}") from None
    tx = rule.make()
    plain_update = jax.jit(tx.update)
    wrapped_update = jax.jit(injected.update)
    state = tx.init(params)
    wrapped_state = cast(Any, injected.init(params))
    for i in range(4):
        grads = example_grads(params)
        up, next_state = plain_update(grads, state, params)
        uw, sw = wrapped_update(
            grads, wrapped_state._replace(inner_state=state), params
        )
        assert_trees_close(
            "inject_hyperparams", f"step {i + 1} updates", uw, up, rtol=RTOL, atol=ATOL
        )
        assert_trees_close(
            "inject_hyperparams",
            f"step {i + 1} inner state",
            sw.inner_state,
            next_state,
            rtol=RTOL,
            atol=ATOL,
        )
        params = optax.apply_updates(params, up)
        state, wrapped_state = next_state, sw


def check_extra_args(rule: RuleUnderTest) -> None:
    """Unknown keyword arguments to ``update`` are accepted and ignored."""
    params = example_params()
    plain = _run(rule.make(), params, 2)
    extra = _run(
        rule.make(), params, 2, unexpected_extra_arg_the_rule_does_not_know=jnp.ones(3)
    )
    for i, ((up, _, _), (ue, _, _)) in enumerate(zip(plain, extra, strict=True)):
        assert_trees_close(
            "extra_args", f"step {i + 1} updates", ue, up, rtol=RTOL, atol=ATOL
        )


def check_init_abstract(rule: RuleUnderTest) -> None:
    """``init`` runs under ``jax.eval_shape`` on ``ShapeDtypeStruct`` trees."""
    params = example_params()
    tx = rule.make()
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    try:
        state_shape = jax.eval_shape(tx.init, abstract)
    except Exception as error:
        raise fail(
            "init_abstract",
            f"init failed on ShapeDtypeStruct leaves: {type(error).__name__}: {error}",
        ) from None
    assert_same_shapes_and_dtypes(
        "init_abstract", "abstract state", state_shape, tx.init(params)
    )
    try:
        direct = tx.init(abstract)
    except Exception as error:
        raise fail(
            "init_abstract",
            "init(ShapeDtypeStruct tree) failed outside eval_shape: "
            f"{type(error).__name__}: {error}",
        ) from None
    assert_same_shapes_and_dtypes(
        "init_abstract", "state of init(ShapeDtypeStruct tree)", direct, state_shape
    )


def check_tree_map_params(rule: RuleUnderTest) -> None:
    """``optax.tree_utils.tree_map_params`` finds the parameter-shaped state."""
    params = example_params()
    tx = rule.make()
    state = tx.init(params)
    try:
        mapped = optax.tree_utils.tree_map_params(tx, lambda p: p, state)
    except Exception as error:
        raise fail("tree_map_params", f"{type(error).__name__}: {error}") from None
    assert_trees_close(
        "tree_map_params", "state after an identity map", mapped, state, rtol=0
    )


def check_vmap(rule: RuleUnderTest) -> None:
    """``jax.vmap`` over a batch of parameter trees equals one run per tree."""
    batch = [example_params(seed=s) for s in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    tx = rule.make()

    def two_steps(params: Any) -> tuple[Any, Any]:
        state = tx.init(params)
        for _ in range(2):
            updates, state = tx.update(example_grads(params), state, params)
            params = optax.apply_updates(params, updates)
        return params, state

    batched = jax.jit(jax.vmap(two_steps))(stacked)
    for i, params in enumerate(batch):
        single = jax.jit(two_steps)(params)
        assert_trees_close(
            "vmap",
            f"batch element {i}",
            jax.tree.map(lambda x, i=i: x[i], batched),
            single,
            rtol=RTOL,
            atol=ATOL,
        )


def check_scan(rule: RuleUnderTest) -> None:
    """``lax.scan`` over steps equals a Python loop of jitted steps."""
    params = example_params()
    tx = rule.make()

    def step(carry: tuple[Any, Any], _: Any) -> tuple[tuple[Any, Any], None]:
        params, state = carry
        updates, state = tx.update(example_grads(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (scanned, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=5))(
        params
    )
    looped = _run(tx, params, 5)[-1][2]
    assert_trees_close(
        "scan", "params after 5 steps", scanned, looped, rtol=RTOL, atol=ATOL
    )


def check_schedule(rule: RuleUnderTest) -> None:
    """A learning-rate schedule is accepted and evaluated at the right step."""
    lr = rule.learning_rate
    if lr is None or callable(lr):
        raise CheckSkipped("the rule has no numeric learning_rate (or lr)")
    params = example_params()
    name = rule.learning_rate_name
    constant = _run(rule.make(**{name: optax.constant_schedule(lr)}), params, 3)
    plain = _run(rule.make(), params, 3)
    for i, ((uc, _, _), (up, _, _)) in enumerate(zip(constant, plain, strict=True)):
        assert_trees_close(
            "schedule", f"constant schedule, step {i + 1}", uc, up, rtol=RTOL, atol=ATOL
        )
    # A decaying schedule, read by the rule itself and by inject_hyperparams
    # (which evaluates it independently at its own count), must agree.
    schedule = optax.linear_schedule(lr, 0.1 * lr, transition_steps=4)
    direct = _run(rule.make(**{name: schedule}), params, 4)
    injected_tx = optax.inject_hyperparams(rule.factory, static_args=rule.static_args)(
        **{**rule.hyperparams, name: schedule}
    )
    injected = _run(injected_tx, params, 4)
    for i, ((ud, _, _), (ui, _, _)) in enumerate(zip(direct, injected, strict=True)):
        assert_trees_close(
            "schedule", f"decaying schedule, step {i + 1}", ud, ui, rtol=RTOL, atol=ATOL
        )


def _converges(check: str, rule: RuleUnderTest, problem: Callable[..., Any]) -> None:
    start, solution, objective = problem()
    tx = rule.make()

    def step(carry: tuple[Any, Any], _: Any) -> tuple[tuple[Any, Any], None]:
        x, state = carry
        updates, state = tx.update(jax.grad(objective)(x), state, x)
        return (optax.apply_updates(x, updates), state), None

    (x, _), _ = jax.jit(
        lambda x: jax.lax.scan(step, (x, tx.init(x)), length=rule.steps)
    )(start)
    assert_trees_close(
        check, f"solution after {rule.steps} steps", x, solution, rtol=3e-2, atol=3e-2
    )


def check_converges_parabola(rule: RuleUnderTest) -> None:
    """Reaches the minimum of a 3-d parabola (within 3e-2)."""
    _converges("converges_parabola", rule, parabola)


def check_converges_rosenbrock(rule: RuleUnderTest) -> None:
    """Reaches the minimum of Rosenbrock's valley (within 3e-2)."""
    _converges("converges_rosenbrock", rule, rosenbrock)


def _mesh_shape(n: int) -> tuple[int, int]:
    if n >= 8:
        return (4, 2)
    if n >= 4:
        return (n // 2, 2)
    return (n, 1)


def check_sharding(rule: RuleUnderTest) -> None:
    """With sharded params, jitted init/update shard state like the params.

    Runs on a mesh with ``Auto`` axes (sharding decided by the compiler, where a
    ``zeros_like`` init lands on one device) and with ``Explicit`` axes
    (sharding in the types, under ``jax.set_mesh``).
    """
    devices = jax.devices()
    if len(devices) < 2:
        raise CheckSkipped(
            "needs several devices: set jax_num_cpu_devices=8 before JAX starts"
        )
    rows, cols = _mesh_shape(len(devices))
    host = _sharding_problem(rows, cols)
    # The numbers the sharded steps must reproduce, on one device.
    plain = rule.make()
    plain_params = {k: jnp.asarray(v, jnp.float32) for k, v in host.items()}
    plain_state = plain.init(plain_params)
    step_fn = jax.jit(_example_step(plain))
    for _ in range(2):
        plain_params, plain_state = step_fn(plain_params, plain_state)
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh(
            (rows, cols),
            ("x", "y"),
            axis_types=(axis_type, axis_type),
            devices=devices[: rows * cols],
        )
        context = jax.set_mesh(mesh) if axis_type == AxisType.Explicit else None
        with context or contextlib.nullcontext():
            _check_sharding_on(
                rule, mesh, host, plain_params, f"{axis_type.name} mesh axes"
            )


_SHARDING_SPECS = {
    "w": PartitionSpec("x", "y"),
    "b": PartitionSpec("y"),
    "v": PartitionSpec("x"),
    "s": PartitionSpec(),
}


_MATRIX_SHARDING_SPECS = {
    "w": PartitionSpec("x", "y"),
    "b": PartitionSpec(None, "y"),
    "v": PartitionSpec("x", None),
    "s": PartitionSpec(),
}


def _sharding_specs() -> dict[str, PartitionSpec]:
    return _MATRIX_SHARDING_SPECS if matrices_only_active() else _SHARDING_SPECS


def _sharding_problem(rows: int, cols: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    if matrices_only_active():
        return {
            "w": rng.normal(size=(2 * rows, 2 * cols)),
            "b": rng.normal(size=(1, 2 * cols)),
            "v": rng.normal(size=(4 * rows, 2)),
            "s": rng.normal(size=(2, 2)),
        }
    return {
        "w": rng.normal(size=(2 * rows, 2 * cols)),
        "b": rng.normal(size=(2 * cols,)),
        "v": rng.normal(size=(4 * rows,)),
        "s": rng.normal(size=()),
    }


def _is_stored_array(x: Any) -> bool:
    """A pytree node standing for one array (``jaxopt_rules.QuantizedArray``)."""
    return not isinstance(x, jax.Array) and hasattr(x, "dequantize")


def _example_step(
    tx: optax.GradientTransformationExtraArgs,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        updates, state = tx.update(example_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    return step


def _check_sharding_on(
    rule: RuleUnderTest,
    mesh: Mesh,
    host: dict[str, np.ndarray],
    expected: Any,
    label: str,
) -> None:
    specs = _sharding_specs()
    shardings = {k: NamedSharding(mesh, specs[k]) for k in host}
    params = {
        k: jax.device_put(jnp.asarray(v, jnp.float32), shardings[k])
        for k, v in host.items()
    }
    tx = rule.make()

    def check_state(state: Any, when: str) -> None:
        def check_leaf(leaf: Any, param: Any) -> Any:
            # Only state shaped like its parameter can be sharded like it (an
            # array stored in another form, such as quantized, is skipped).
            if (
                isinstance(leaf, jax.Array)
                and jnp.shape(leaf) == jnp.shape(param)
                and not leaf.sharding.is_equivalent_to(param.sharding, jnp.ndim(leaf))
            ):
                raise fail(
                    "sharding",
                    f"{label}, {when}: a state leaf of shape "
                    f"{jnp.shape(leaf)} is sharded as {leaf.sharding}, its "
                    f"parameter as {param.sharding}",
                )
            return leaf

        optax.tree_utils.tree_map_params(
            tx, check_leaf, state, params, is_leaf=_is_stored_array
        )

    try:
        state = jax.jit(tx.init)(params)
    except ValueError as error:
        raise fail("sharding", f"{label}: jitted init failed: {error}") from None
    check_state(state, "after jitted init")

    sharded_params, sharded_state = params, state
    step_fn = jax.jit(_example_step(tx))
    for _ in range(2):
        sharded_params, sharded_state = step_fn(sharded_params, sharded_state)
    check_state(sharded_state, "after jitted update")
    for k, sharding in shardings.items():
        if not sharded_params[k].sharding.is_equivalent_to(sharding, host[k].ndim):
            raise fail("sharding", f"{label}: params['{k}'] lost its sharding")
    assert_trees_close(
        "sharding",
        f"{label}: sharded vs single-device params",
        jax.device_get(sharded_params),
        jax.device_get(expected),
        rtol=RTOL,
        atol=ATOL,
    )


def check_names_bad_leaves(rule: RuleUnderTest) -> None:
    """Bad leaves raise errors naming the leaf; integer leaves are left alone.

    A gradient tree missing a leaf and a non-array leaf must raise errors that
    name the leaf's path. Integer leaves (step counters, integer buffers) are
    initialised and get a zero update, as in optax.
    """
    params = example_params()
    tx = rule.make()
    state = tx.init(params)
    grads = example_grads(params)
    wrong = {**grads, "dense": {"w": grads["dense"]["w"]}}
    try:
        tx.update(wrong, state, params)
    except Exception as error:  # any exception type, but the path must be named
        if "['dense']['b']" not in str(error):
            raise fail(
                "names_bad_leaves",
                "a gradient tree missing ['dense']['b'] "
                f"raised an error that does not name it: {error}",
            ) from None
    else:
        raise fail(
            "names_bad_leaves", "a gradient tree missing ['dense']['b'] was accepted"
        )
    bad_params = {**params, "scale": "0.5"}
    try:
        tx.init(bad_params)
    except Exception as error:
        if "['scale']" not in str(error):
            raise fail(
                "names_bad_leaves",
                "a string parameter leaf raised an error that "
                f"does not name its path ['scale']: {error}",
            ) from None
    else:
        raise fail("names_bad_leaves", "a string parameter leaf was accepted")
    int_params = {**params, "scale": jnp.array(3, jnp.int32)}
    try:
        int_state = tx.init(int_params)
        int_grads = {**grads, "scale": jnp.zeros((), jnp.int32)}
        updates = cast(Any, tx.update(int_grads, int_state, int_params)[0])
    except Exception as error:
        raise fail(
            "names_bad_leaves",
            "an int32 parameter leaf (a step counter in the parameter tree) was "
            f"refused, where optax leaves it untouched: {type(error).__name__}: "
            f"{error}",
        ) from None
    if np.any(np.asarray(updates["scale"]) != 0):
        raise fail(
            "names_bad_leaves",
            f"the int32 leaf ['scale'] got a non-zero update {updates['scale']}",
        )


def _complex_parabola() -> Problem:
    target = jnp.array([1 - 1j, -1 + 1j, 1 + 1j], jnp.complex64)
    start = jnp.array([-1 + 1j, 10 - 2j, 1 + 0j], jnp.complex64)
    return start, target, lambda z: jnp.sum(abs_sq(z - target))


def check_complex_params(rule: RuleUnderTest) -> None:
    """Complex parameters: supported and converging, or refused by name.

    On ``sum |z - z*|**2`` over 3 complex numbers, stepping along
    ``conj(grad)`` (optax's convention: the steepest descent direction of a
    real loss of complex parameters), a rule that accepts complex parameters
    keeps updates and state complex where they should be, and reaches the
    minimum (within 3e-2); a rule that does not must raise a ``TypeError``
    that says ``complex``.
    """
    start, solution, vector_objective = _complex_parabola()
    objective: Callable[[jax.Array], jax.Array] = vector_objective
    if matrices_only_active():
        start, solution = start[:, None], solution[:, None]

        def column_objective(z: jax.Array) -> jax.Array:
            return vector_objective(z[:, 0])

        objective = column_objective

    tx = rule.make()
    try:
        state = tx.init(start)
    except TypeError as error:
        if "complex" not in str(error):
            raise fail(
                "complex_params",
                f"complex parameters were refused without saying so: {error}",
            ) from None
        return

    def step(carry: Any, _: Any) -> tuple[Any, None]:
        z, state = carry
        grads = jnp.conj(jax.grad(objective)(z))
        updates, state = tx.update(grads, state, z)
        return (optax.apply_updates(z, updates), state), None

    first = cast(
        jax.Array, tx.update(jnp.conj(jax.grad(objective)(start)), state, start)[0]
    )
    if first.dtype != start.dtype:
        raise fail(
            "complex_params",
            f"updates of complex64 parameters have dtype {first.dtype}",
        )
    (z, _), _ = jax.jit(
        lambda z: jax.lax.scan(step, (z, tx.init(z)), length=rule.steps)
    )(start)
    assert_trees_close(
        "complex_params",
        f"solution after {rule.steps} steps",
        z,
        solution,
        rtol=3e-2,
        atol=3e-2,
    )


CHECKS: Mapping[str, Callable[[RuleUnderTest], None]] = {
    "structure_and_dtypes": check_structure_and_dtypes,
    "jit_matches_eager": check_jit_matches_eager,
    "no_recompile": check_no_recompile,
    "cond_state_types": check_cond_state_types,
    "chain": check_chain,
    "masked": check_masked,
    "partition": check_partition,
    "multi_steps": check_multi_steps,
    "apply_if_finite": check_apply_if_finite,
    "inject_hyperparams": check_inject_hyperparams,
    "extra_args": check_extra_args,
    "init_abstract": check_init_abstract,
    "tree_map_params": check_tree_map_params,
    "vmap": check_vmap,
    "scan": check_scan,
    "schedule": check_schedule,
    "converges_parabola": check_converges_parabola,
    "converges_rosenbrock": check_converges_rosenbrock,
    "sharding": check_sharding,
    "names_bad_leaves": check_names_bad_leaves,
    "complex_params": check_complex_params,
}
"""Every conformance check by name, in the order :func:`check_rule` runs them."""


def _subject(
    factory: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any] | None,
    static_args: tuple[str, ...] | None,
    steps: int,
) -> RuleUnderTest:
    if static_args is None:
        static_args = tuple(getattr(factory, "static_args", ()))
    return RuleUnderTest(factory, dict(hyperparams or {}), static_args, steps)


def run_check(
    name: str,
    factory: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any] | None = None,
    *,
    static_args: tuple[str, ...] | None = None,
    steps: int = 10_000,
    matrices_only: bool = False,
) -> bool:
    """Runs one check; raises :class:`ConformanceError` if the rule fails it.

    Args:
        name: a key of :data:`CHECKS`.
        factory: the rule factory (any callable returning an optax transform).
        hyperparams: keyword arguments for the factory.
        static_args: for ``optax.inject_hyperparams`` (default: the factory's
            ``static_args`` attribute).
        steps: steps allowed in the convergence checks.
        matrices_only: the rule takes 2-d leaves only; every problem then has
            matrix leaves (same tree structure and names).

    Returns:
        True if the check ran, False if it does not apply here (for instance
        the sharding check with a single device).
    """
    if name not in CHECKS:
        raise KeyError(f"unknown check {name!r}; the checks are {sorted(CHECKS)}")
    try:
        with _matrix_problems(matrices_only):
            CHECKS[name](_subject(factory, hyperparams, static_args, steps))
    except CheckSkipped:
        return False
    except ConformanceError:
        raise
    except Exception as error:
        raise fail(name, f"raised {type(error).__name__}: {error}") from error
    return True


def check_rule(
    factory: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any] | None = None,
    *,
    static_args: tuple[str, ...] | None = None,
    steps: int = 10_000,
    skip: tuple[str, ...] = (),
    matrices_only: bool = False,
) -> list[str]:
    """Runs every conformance check on a rule; one call from a test.

    Args:
        factory: the rule factory (any callable returning an optax transform).
        hyperparams: keyword arguments for the factory; they must make the rule
            converge on the parabola and Rosenbrock problems in ``steps`` steps.
        static_args: for ``optax.inject_hyperparams`` (default: the factory's
            ``static_args`` attribute).
        steps: steps allowed in the convergence checks.
        skip: names of checks not to run.
        matrices_only: the rule takes 2-d leaves only (see :func:`run_check`).

    Returns:
        The names of the checks that ran (those that do not apply are left out).

    Raises:
        ConformanceError: listing every failed check, each with the leaf path.

    Example:
        >>> import jaxopt_rules as jr
        >>> from jaxopt_rules import testing
        >>> ran = testing.check_rule(jr.sgd, {"learning_rate": 1e-3, "momentum": 0.9},
        ...                          skip=("sharding",))
        >>> "inject_hyperparams" in ran
        True
    """
    failures, ran = [], []
    for name in CHECKS:
        if name in skip:
            continue
        try:
            if run_check(
                name,
                factory,
                hyperparams,
                static_args=static_args,
                steps=steps,
                matrices_only=matrices_only,
            ):
                ran.append(name)
        except ConformanceError as error:
            failures.append(str(error))
    if failures:
        raise ConformanceError(
            f"{len(failures)} conformance check(s) failed:\n" + "\n".join(failures)
        )
    return ran
