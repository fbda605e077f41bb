"""Rprop: per-element step sizes adapted to the signs of successive gradients."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec


def _check_step_bounds(hyper: Mapping[str, Any]) -> None:
    """Refuses ``min_step_size > max_step_size`` when both are plain numbers."""
    low, high = hyper["min_step_size"], hyper["max_step_size"]
    if isinstance(low, int | float | np.number) and isinstance(
        high, int | float | np.number
    ):
        if low > high:
            raise ValueError(
                f"rprop: min_step_size={low!r} is larger than max_step_size={high!r}"
            )


@rule(
    name="rprop",
    slots={"step_sizes": Slot(init="learning_rate"), "prev_updates": Slot()},
    constraints={
        "learning_rate": ">= 0",
        "eta_minus": ">= 0",
        "eta_plus": ">= 0",
        "min_step_size": ">= 0",
        "max_step_size": ">= 0",
    },
    positional=(
        "learning_rate",
        "eta_minus",
        "eta_plus",
        "min_step_size",
        "max_step_size",
    ),
    check=_check_step_bounds,
)
def rprop(
    grad: Array,
    step_sizes: Array,
    prev_updates: Array,
    *,
    learning_rate: Scalar,
    eta_minus: Scalar = 0.5,
    eta_plus: Scalar = 1.2,
    min_step_size: Scalar = 1e-6,
    max_step_size: Scalar = 50.0,
) -> tuple[Array, Array, Array]:
    r"""Rprop: each element's step grows while its gradient keeps its sign.

    A drop-in for ``optax.rprop`` (same arguments, defaults and numbers), plus
    storage dtypes for its two slots. Only the signs of the gradients matter.
    Each element keeps a step size ``s`` (starting at ``learning_rate``) and
    the step it proposed last, ``p`` (``prev_updates``, starting at 0):

    Update::

        q   = g_t * p_{t-1}
        s_t = s_{t-1}                                       where q == 0
              clip(eta_plus  * s_{t-1}, min_step, max_step)  where q > 0
              clip(eta_minus * s_{t-1}, min_step, max_step)  where q < 0
        p_t = 0 where q < 0, else s_t * sign(g_t)
        u_t = 0 where q < 0, else -p_{t-1}

    As in optax, the step applied at ``t`` is the one proposed at ``t - 1``
    (so the first update is zero), withheld where the gradient's sign has just
    flipped. The papers apply ``-s_t * sign(g_t)`` at once; this drop-in
    follows optax. After a flip ``p`` is 0, so the next step size is left
    unchanged (as in iRprop-).

    Args:
        learning_rate: the initial step size of every element (a schedule is
            read at step 0; optax takes a number only).
        eta_minus: factor applied to the step size when the sign flips.
        eta_plus: factor applied to the step size when the sign is kept.
        min_step_size: smallest step size after an adaptation.
        max_step_size: largest step size after an adaptation.
        step_sizes_dtype: storage dtype of the step sizes (default: the
            parameter's).
        prev_updates_dtype: storage dtype of the proposed steps (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Raises:
        ValueError: ``min_step_size`` larger than ``max_step_size``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.rprop(0.1)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, state)
        >>> updates["w"]  # the first step is proposed, not applied
        Array([-0., -0.], dtype=float32)
        >>> updates, state = tx.update({"w": jnp.array([2.0, 1.0])}, state)
        >>> updates["w"], state.step_sizes["w"]
        (Array([-0.1, -0. ], dtype=float32), Array([0.12, 0.05], dtype=float32))
        >>> jr.rprop(0.1, min_step_size=1.0, max_step_size=0.5)
        Traceback (most recent call last):
        ...
        ValueError: rprop: min_step_size=1.0 is larger than max_step_size=0.5

    References:
        Riedmiller and Braun, "A direct adaptive method for faster
        backpropagation learning: the RPROP algorithm", ICNN 1993. Igel and
        Huesken, "Empirical evaluation of the improved Rprop learning
        algorithms", Neurocomputing 2003. Verified against ``optax.rprop``.
    """
    agreement = grad * prev_updates
    adapted = jnp.clip(
        step_sizes * jnp.where(agreement > 0, eta_plus, eta_minus),
        min_step_size,
        max_step_size,
    )
    step_sizes = jnp.where(agreement == 0, step_sizes, adapted)
    flipped = agreement < 0
    update = -jnp.where(flipped, 0.0, prev_updates)
    prev_updates = jnp.where(flipped, 0.0, step_sizes * jnp.sign(grad))
    return update, step_sizes, prev_updates


SPEC = RuleSpec(
    name="rprop",
    factory=rprop,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.rprop",
    reference_factory=optax.rprop,
    reference_cases=(
        {"learning_rate": 1e-2},
        {
            "learning_rate": 1e-3,
            "eta_minus": 0.3,
            "eta_plus": 1.5,
            "min_step_size": 1e-4,
            "max_step_size": 0.05,
        },
    ),
)
