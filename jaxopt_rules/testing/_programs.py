"""Compiled programs the conformance checks share.

Most of the kit's time is XLA compilation, not running: a check that compiled
its own copy of "the rule's jitted step on the example tree" would pay for the
same program again and again. Here one transform gets one jitted step program
(its compiled versions keyed by the input types, as ``jax.jit`` does), the
gradients of the example loss are one program for every rule, and a trajectory
of that step is computed once and read by every check that compares against
it.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules.testing._problems import example_grads


example_grads_jit: Callable[[Any], Any] = jax.jit(example_grads)
""":func:`example_grads`, compiled once per tree signature for every rule."""


Step = tuple[Any, Any, Any]
"""(updates, state, params) after one step."""


def signature(tree: Any) -> tuple[Any, ...]:
    """What ``jax.jit`` keys its cache on: structure, shapes, dtypes, weak types."""
    leaves, treedef = jax.tree.flatten(tree)
    return (
        treedef,
        tuple(
            (jnp.shape(x), jnp.result_type(x), getattr(x, "weak_type", False))
            for x in leaves
        ),
    )


def _copy(tree: Any) -> Any:
    """Fresh buffers for every array leaf (weak types kept), for donation."""
    return jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, tree)


class StepProgram:
    """One jitted step ``(grads, state, params) -> (updates, state, params)``.

    The state and parameters are donated, as in a training loop; :meth:`run`
    passes copies so that the trajectories it returns stay readable. Every
    trace is recorded with the parameters' and the state's types, so a check
    can tell whether a later step retraced (see the ``no_recompile`` check).

    Args:
        tx: the transform.
        extra_args: keyword arguments passed to every ``update`` call.
    """

    def __init__(
        self,
        tx: optax.GradientTransformationExtraArgs,
        extra_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.tx = tx
        self.extra_args = dict(extra_args or {})
        self.traces: list[tuple[Any, Any]] = []

        def step(grads: Any, state: Any, params: Any, extra: Any) -> Step:
            self.traces.append((signature(params), signature(state)))
            updates, state = tx.update(grads, state, params, **extra)
            return updates, state, optax.apply_updates(params, updates)

        self._step = jax.jit(step, donate_argnums=(1, 2))

    def __call__(self, grads: Any, state: Any, params: Any) -> Step:
        """One step from copies of ``state`` and ``params``."""
        return self._step(grads, _copy(state), _copy(params), self.extra_args)

    def run(self, params: Any, steps: int, state: Any = None) -> list[Step]:
        """``steps`` steps on the example loss from ``params`` (and ``init``)."""
        if state is None:
            state = self.tx.init(params)
        out = []
        for _ in range(steps):
            updates, state, params = self(example_grads_jit(params), state, params)
            out.append((updates, state, params))
        return out

    def traces_of(self, params: Any) -> int:
        """How many times the step was traced for parameters typed like ``params``."""
        key = signature(params)
        return sum(1 for traced, _ in self.traces if traced == key)


def run_eager(
    tx: optax.GradientTransformationExtraArgs, params: Any, steps: int
) -> list[Step]:
    """``steps`` un-jitted steps on the example loss: [(updates, state, params)]."""
    state = tx.init(params)
    out = []
    for _ in range(steps):
        updates, state = tx.update(example_grads(params), state, params)
        params = optax.apply_updates(params, updates)
        out.append((updates, state, params))
    return out


_SGD = optax.with_extra_args_support(optax.sgd(0.1))
_SGD_PROGRAM = StepProgram(_SGD)


def sgd_program() -> StepProgram:
    """Plain SGD at 0.1, one program for every rule (the ``partition`` check)."""
    return _SGD_PROGRAM


def sgd() -> optax.GradientTransformationExtraArgs:
    """The SGD transform of :func:`sgd_program`."""
    return _SGD
