"""What Sophia's two forms share: an estimator run every few steps, then the rule.

Sophia-H (:func:`jaxopt_rules.sophia`) and Sophia-G
(:func:`jaxopt_rules.sophia_g`) are each one per-leaf rule fed an estimate of
the Hessian's diagonal, made on some steps by an optax transform with its own
state (Hutchinson's probes, the Gauss-Newton-Bartlett sampled labels). This
module builds the transform around the two: the estimator runs under
``lax.cond`` only on the steps that refresh, its state is the last field of the
rule's state, and abstract parameters get an abstract state. It also holds the
split of a tree into the floating leaves an estimator differentiates and the
leaves (integer counters) it holds constant.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import init_with_last_field, split_last_field


Refresh = Callable[[jax.Array], jax.Array]
"""The update count (updates done so far) -> whether this update re-estimates."""


def estimate_then_step(
    name: str,
    moments: optax.GradientTransformationExtraArgs,
    estimator: optax.GradientTransformation,
    refresh: Refresh,
    state_class: Any,
    after: Callable[[Any, Any], None] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """``moments`` (a rule taking ``hessian`` and ``refresh``) fed ``estimator``.

    Args:
        name: the rule's name, for errors.
        moments: the per-leaf rule's transform; its ``update`` takes the extra
            arguments ``hessian`` (the estimate) and ``refresh``.
        estimator: an optax transform whose ``update(grads, state, params,
            **extra_args)`` returns the estimate; every extra argument of the
            built ``update`` is handed to it.
        refresh: whether an update with a given count refreshes.
        state_class: the state: the rule's fields, then the estimator's state.
        after: called with the rule's new state and the old state after each
            update (Sophia-H's win-rate printout).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs params.
    """
    estimator = optax.with_extra_args_support(estimator)

    init = init_with_last_field(moments.init, state_class, estimator.init)

    def update(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        if params is None:
            raise ValueError(f"{name}: update needs params (for the Hessian estimate)")
        inner, estimator_state = split_last_field(
            name, state, state_class, moments.init, params
        )
        now = refresh(state.count)

        def estimate(hessian_state: Any) -> tuple[Any, Any]:
            return estimator.update(updates, hessian_state, params, **extra_args)

        shapes, _ = jax.eval_shape(estimate, estimator_state)

        def skip(hessian_state: Any) -> tuple[Any, Any]:
            zeros = jax.tree.map(
                lambda p, s: jnp.zeros_like(p, dtype=s.dtype), params, shapes
            )
            return zeros, hessian_state

        hessian, hessian_state = jax.lax.cond(now, estimate, skip, estimator_state)
        new_updates, new_inner = moments.update(
            updates, inner, params, hessian=hessian, refresh=now
        )
        if after is not None:
            after(new_inner, state)
        new_fields: Any = new_inner
        return new_updates, state_class(*new_fields, hessian_state)

    return optax.GradientTransformationExtraArgs(init, update)


class FloatingLeaves:
    """A tree's floating leaves, to differentiate, and the rest, held constant.

    Attributes:
        moving: the floating leaves, in tree order.
        floating: per leaf of the tree, whether it is floating.
    """

    def __init__(self, tree: Any) -> None:
        self._leaves, self._treedef = jax.tree.flatten(tree)
        self.floating = [
            jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in self._leaves
        ]
        self.moving = [x for x, f in zip(self._leaves, self.floating, strict=True) if f]

    def rebuild(self, moving: Sequence[Any]) -> Any:
        """The tree with ``moving`` in place of its floating leaves."""
        it = iter(moving)
        leaves = [
            next(it) if f else x
            for x, f in zip(self._leaves, self.floating, strict=True)
        ]
        return jax.tree.unflatten(self._treedef, leaves)

    def spread(self, per_floating: Sequence[Any]) -> Any:
        """The tree with ``per_floating`` at its floating leaves and zeros elsewhere."""
        it = iter(per_floating)
        leaves = [
            next(it) if f else jnp.zeros_like(x)
            for x, f in zip(self._leaves, self.floating, strict=True)
        ]
        return jax.tree.unflatten(self._treedef, leaves)
