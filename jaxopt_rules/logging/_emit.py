"""The device-to-host side of log_step: one ``jax.debug.callback`` per fired step.

The only module of the package that calls a host callback. ``jax.debug.callback``
(never ``io_callback``, which breaks ``grad``; never ``ordered=True``, which
fails on several devices). Under ``vmap`` the emitter is a ``custom_vmap``
that reduces the predicate with ``any`` and sends the whole batch in one call,
so a population of runs costs one callback per fired step, not one per
member. On the host the packed vector becomes records, which a
:class:`~jaxopt_rules.logging.Dispatcher` delivers off the training thread.
"""

import atexit
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_rules.logging._dispatch import Dispatcher, close_all
from jaxopt_rules.logging._records import Layout, make_record


_LOG = logging.getLogger("jaxopt_rules")


def _drain_at_exit() -> None:
    """At interpreter exit: take every fired record from the device, deliver all.

    Registered after JAX's own exit hooks, so it runs before them (``atexit``
    runs last-registered first), while the backend still exists.
    """
    try:
        jax.effects_barrier()
    except Exception:
        _LOG.exception("jaxopt_rules: could not wait for pending step records")
    close_all()


atexit.register(_drain_at_exit)


def host_emit(
    dispatcher_ref: "weakref.ref[Dispatcher]",
    layout: Layout,
    fire: Any,
    count: Any,
    values: Any,
) -> None:
    """Runs on the host: split leading (vmap) axes into records; submit fired ones.

    The dispatcher is held weakly: JAX's caches keep this callback, and must
    not keep a dropped log_step's thread and files alive.
    """
    dispatcher = dispatcher_ref()
    if dispatcher is None:
        _LOG.warning("jaxopt_rules: a step record of a discarded log_step was dropped")
        return
    fire = np.asarray(fire)
    count = np.asarray(count)
    values = np.asarray(values, np.float64)
    batch_shape = tuple(fire.shape)
    for index in np.ndindex(*batch_shape):
        if not fire[index]:
            continue
        record = make_record(layout, int(count[index]), values[index])
        if len(batch_shape) == 1:
            record["batch_index"] = int(index[0])
        elif batch_shape:
            record["batch_index"] = [int(i) for i in index]
        dispatcher.submit(record)


def emitter(callback: Callable[..., None]) -> Callable[..., jax.Array]:
    """``emit(fire, count, values)``: one host callback when fired, vmap-aware.

    Args:
        callback: the host function, called as ``callback(fire, count, values)``
            with the batch (if any) as leading axes.

    Returns:
        A function of device arrays that returns a dummy int32 scalar.
    """

    @jax.custom_batching.custom_vmap
    def emit(fire: jax.Array, count: jax.Array, values: jax.Array) -> jax.Array:
        def fired(fire: jax.Array, count: jax.Array, values: jax.Array) -> None:
            jax.debug.callback(callback, fire, count, values)

        jax.lax.cond(jnp.any(fire), fired, lambda *a: None, fire, count, values)
        return jnp.zeros((), jnp.int32)

    @emit.def_vmap
    def emit_batched(
        axis_size: int,
        in_batched: Sequence[bool],
        fire: jax.Array,
        count: jax.Array,
        values: jax.Array,
    ) -> tuple[jax.Array, bool]:
        def lead(x: jax.Array, batched: bool) -> jax.Array:
            return x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))

        fire, count, values = (
            lead(x, b) for x, b in zip((fire, count, values), in_batched, strict=True)
        )
        # The batch becomes a leading axis of one call: the recursive call
        # handles any enclosing vmap the same way.
        out = emit(fire, count, values)
        return jnp.broadcast_to(out, (axis_size,)), True

    return emit
