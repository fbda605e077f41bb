"""The sharding check: state sharded like its parameters on a device mesh."""

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxopt_rules.quantized import is_quantized
from jaxopt_rules.testing._compare import assert_trees_close, fail
from jaxopt_rules.testing._programs import example_grads_jit
from jaxopt_rules.testing._subject import ATOL, RTOL, CheckSkipped, RuleUnderTest


ENABLE_DEVICES = (
    'call jax.config.update("jax_num_cpu_devices", 8) before JAX first runs '
    "(at the top of conftest.py, say) for 8 virtual CPU devices"
)
"""How to give a CPU-only process the devices the sharding check needs."""


def mesh_shape(n: int) -> tuple[int, int]:
    """The (rows, cols) mesh the check uses on ``n`` devices."""
    if n >= 8:
        return (4, 2)
    if n >= 4:
        return (n // 2, 2)
    return (n, 1)


_SPECS = {
    "w": PartitionSpec("x", "y"),
    "b": PartitionSpec("y"),
    "v": PartitionSpec("x"),
    "s": PartitionSpec(),
}

_MATRIX_SPECS = {
    "w": PartitionSpec("x", "y"),
    "b": PartitionSpec(None, "y"),
    "v": PartitionSpec("x", None),
    "s": PartitionSpec(),
}


def sharding_problem(
    rows: int, cols: int, *, matrices_only: bool = False
) -> dict[str, np.ndarray]:
    """Parameters ``w, b, v, s`` sized to split over a ``rows x cols`` mesh."""
    rng = np.random.default_rng(1)
    if matrices_only:
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


def _example_step(
    tx: optax.GradientTransformationExtraArgs,
) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _gradients(params: Any) -> Any:
    """``example_grads`` of the values of ``params``, laid out like them.

    Computed by one single-device program whatever the layout of ``params``,
    so that both runs take their gradients from the same compiled code and the
    check compares the rule's arithmetic across layouts, not the loss's: XLA
    compiles the loss's gradient for each layout (seen: 1-ulp differences in
    ``sin``'s derivative between the sharded and the single-device program,
    enough to move a 4-bit code of a quantized state).
    """
    on_one = jax.device_put(jax.device_get(params), jax.devices()[0])
    grads = example_grads_jit(on_one)
    return jax.tree.map(lambda g, p: jax.device_put(g, p.sharding), grads, params)


def check_sharding(rule: RuleUnderTest) -> None:
    """With sharded params, jitted init/update shard state like the params.

    Runs on a mesh with ``Auto`` axes (sharding decided by the compiler, where a
    ``zeros_like`` init lands on one device) and with ``Explicit`` axes
    (sharding in the types, under ``jax.set_mesh``). Two steps on each must
    give the numbers of two steps on one device; each step's gradients come
    from one single-device program in every run (:func:`_gradients`).
    """
    devices = jax.devices()
    if len(devices) < 2:
        raise CheckSkipped(
            f"needs at least 2 devices and this process has {len(devices)}: "
            + ENABLE_DEVICES
        )
    rows, cols = mesh_shape(len(devices))
    host = sharding_problem(rows, cols, matrices_only=rule.matrices_only)
    # The numbers the sharded steps must reproduce, on one device.
    plain_params = {k: jnp.asarray(v, jnp.float32) for k, v in host.items()}
    step_fn = jax.jit(_example_step(rule.tx))
    plain_state = rule.tx.init(plain_params)
    for _ in range(2):
        plain_params, plain_state = step_fn(
            plain_params, plain_state, _gradients(plain_params)
        )
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh(
            (rows, cols),
            ("x", "y"),
            axis_types=(axis_type, axis_type),
            devices=devices[: rows * cols],
        )
        explicit = axis_type == AxisType.Explicit
        _check_on(
            rule,
            step_fn,
            mesh,
            (lambda m=mesh: jax.set_mesh(m)) if explicit else contextlib.nullcontext,
            host,
            plain_params,
            f"{axis_type.name} mesh axes",
        )


def _check_on(
    rule: RuleUnderTest,
    step_fn: Callable[[Any, Any, Any], tuple[Any, Any]],
    mesh: Mesh,
    in_mesh: Callable[[], contextlib.AbstractContextManager[Any]],
    host: dict[str, np.ndarray],
    expected: Any,
    label: str,
) -> None:
    specs = _MATRIX_SPECS if rule.matrices_only else _SPECS
    shardings = {k: NamedSharding(mesh, specs[k]) for k in host}
    params = {
        k: jax.device_put(jnp.asarray(v, jnp.float32), shardings[k])
        for k, v in host.items()
    }
    tx = rule.tx

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

        with in_mesh():
            optax.tree_utils.tree_map_params(
                tx, check_leaf, state, params, is_leaf=is_quantized
            )

    try:
        with in_mesh():
            state = jax.jit(tx.init)(params)
    except ValueError as error:
        raise fail("sharding", f"{label}: jitted init failed: {error}") from None
    check_state(state, "after jitted init")

    sharded_params, sharded_state = params, state
    for _ in range(2):
        grads = _gradients(sharded_params)  # outside the mesh: one device
        with in_mesh():
            sharded_params, sharded_state = step_fn(
                sharded_params, sharded_state, grads
            )
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
