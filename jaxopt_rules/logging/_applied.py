"""Which updates were applied, for log_step around or inside optax's skipping wrappers.

``optax.MultiSteps`` (gradient accumulation) and ``optax.apply_if_finite``
(skip non-finite steps) call their inner transform and then may discard what
it returned. In optax 0.2.8:

- ``MultiSteps.update`` calls the inner ``update`` on *every* micro-step with
  the gradients accumulated so far, then keeps the inner state and the
  updates only when ``mini_step == k - 1`` (``jnp.where(emit, new, old)``,
  ``emit * updates``);
- ``apply_if_finite``'s ``update`` calls the inner ``update`` inside a
  ``lax.cond`` taken when the gradients are finite or after
  ``max_consecutive_errors`` rejections; otherwise it returns zero updates and
  the old state (under ``vmap`` the ``cond`` becomes a ``select`` and both
  branches run).

:func:`outer_status` reads, from the inner state before and after a step,
whether the step applied an update (log_step *around* the wrapper);
:func:`enclosing_status` finds, while ``update`` is traced, whether log_step is
called *inside* one of them and, from that call's variables, whether the
update it describes will be applied.
"""

import sys
import warnings
from types import FrameType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class OuterStatus(NamedTuple):
    """What the inner state says about a step (log_step around the wrapper)."""

    emitted: jax.Array  # bool: MultiSteps handed out an update (True without it)
    micro_steps: jax.Array | None  # int32: micro-steps in the emitted update
    finite: jax.Array | None  # bool: apply_if_finite found the gradients finite
    skip_inner: tuple[Any, Any] | None  # apply_if_finite's inner state before/after


class InnerStatus(NamedTuple):
    """What the enclosing wrapper's call says (log_step inside the wrapper)."""

    wrapper: str
    applied: jax.Array  # bool: the update this call computes is kept
    micro_steps: jax.Array | None


def _first(tree: Any, cls: type) -> Any:
    """The first node of type ``cls`` in ``tree`` (depth first), or None."""
    nodes = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, cls))
    return next((node for node in nodes if isinstance(node, cls)), None)


def outer_status(old: Any, new: Any) -> OuterStatus | None:
    """Reads a MultiSteps / apply_if_finite state from the inner state, if any.

    MultiSteps emitted an update when its ``mini_step`` wrapped to 0, or, with
    one micro-step per update, when its ``gradient_step`` advanced (a skipped
    micro-step changes neither).
    """
    ms_old, ms_new = (
        _first(old, optax.MultiStepsState),
        _first(new, optax.MultiStepsState),
    )
    aif_old = _first(old, optax.ApplyIfFiniteState)
    aif_new = _first(new, optax.ApplyIfFiniteState)
    if (ms_old is None or ms_new is None) and (aif_old is None or aif_new is None):
        return None
    emitted = jnp.array(True)
    micro_steps = None
    if ms_old is not None and ms_new is not None:
        old_mini, new_mini = (
            jnp.asarray(ms_old.mini_step),
            jnp.asarray(ms_new.mini_step),
        )
        advanced = jnp.asarray(ms_new.gradient_step) != jnp.asarray(
            ms_old.gradient_step
        )
        emitted = (new_mini == 0) & ((old_mini != 0) | advanced)
        micro_steps = old_mini.astype(jnp.int32) + 1
    finite = skip_inner = None
    if aif_old is not None and aif_new is not None:
        finite = jnp.asarray(aif_new.last_finite, jnp.bool_)
        skip_inner = (aif_old.inner_state, aif_new.inner_state)
    return OuterStatus(emitted, micro_steps, finite, skip_inner)


def applied_despite_nonfinite(skip_inner: tuple[Any, Any], updates: Any) -> jax.Array:
    """Whether apply_if_finite gave up and applied a non-finite step.

    A rejected step returns the inner state unchanged (the same object) and
    zero updates; an applied one ran the inner ``update``, which changes its
    state (a count, or NaN moments: ``NaN != NaN``). A stateless inner
    transform is judged by its updates (non-zero or NaN means applied).
    """
    old, new = skip_inner
    old_leaves, new_leaves = jax.tree.leaves(old), jax.tree.leaves(new)
    if old_leaves:
        pairs = zip(old_leaves, new_leaves, strict=True)
        changed = [jnp.any(jnp.asarray(a) != jnp.asarray(b)) for a, b in pairs]
    else:
        changed = [jnp.any(jnp.asarray(u) != 0) for u in jax.tree.leaves(updates)]
    return jnp.any(jnp.stack(changed)) if changed else jnp.array(False)


def _is_optax(frame: FrameType, module: str, function: str) -> bool:
    path = frame.f_code.co_filename.replace("\\", "/")
    return frame.f_code.co_name == function and path.endswith(
        f"optax/transforms/{module}.py"
    )


def _warn_unknown(wrapper: str) -> None:
    warnings.warn(
        f"log_step is inside {wrapper}, but this optax version's internals are "
        "not the ones log_step knows (optax 0.2.8): its records may describe "
        f"updates that {wrapper} discards. Wrap {wrapper} with log_step instead.",
        RuntimeWarning,
        stacklevel=4,
    )


def enclosing_status(max_depth: int = 200) -> InnerStatus | None:
    """If the caller is being run by MultiSteps / apply_if_finite, what it keeps.

    Walks the Python stack (at trace time, once per trace) for optax's
    ``MultiSteps.update._do_update`` or ``apply_if_finite``'s ``do_update``
    and reads the variables those functions decide with: ``state.mini_step``
    and ``k_steps`` (kept when ``mini_step == k - 1``), or ``isfinite``,
    ``notfinite_count`` and ``max_consecutive_errors``.
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        next_frame = frame.f_back
        if next_frame is None:
            return None
        frame = next_frame
        if _is_optax(frame, "_accumulation", "_do_update"):
            local = frame.f_locals
            state, k = local.get("state"), local.get("k_steps")
            if not isinstance(state, optax.MultiStepsState) or k is None:
                _warn_unknown("optax.MultiSteps")
                return None
            k = jnp.asarray(k, jnp.int32)
            applied = jnp.asarray(state.mini_step) == k - 1
            return InnerStatus("optax.MultiSteps", applied, k)
        if _is_optax(frame, "_conditionality", "do_update"):
            outer = frame.f_back
            while outer is not None and not _is_optax(
                outer, "_conditionality", "update"
            ):
                outer = outer.f_back
            local = outer.f_locals if outer is not None else {}
            names = ("isfinite", "notfinite_count", "max_consecutive_errors")
            if not all(name in local for name in names):
                _warn_unknown("optax.apply_if_finite")
                return None
            applied = jnp.asarray(local["isfinite"]) | (
                jnp.asarray(local["notfinite_count"]) > local["max_consecutive_errors"]
            )
            return InnerStatus("optax.apply_if_finite", applied, None)
    return None
