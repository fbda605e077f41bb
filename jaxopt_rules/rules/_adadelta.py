"""Adadelta: steps scaled by the ratio of past update and gradient magnitudes."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="adadelta",
    slots={"e_g": Slot(square=True), "e_x": Slot(square=True)},
    per_leaf={"weight_decay_mask": True},
    constraints={
        "learning_rate": ">= 0",
        "rho": "[0, 1]",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=("learning_rate", "rho", "eps", "weight_decay", "weight_decay_mask"),
)
def adadelta(
    grad: Array,
    e_g: Array,
    e_x: Array,
    param: Array,
    *,
    learning_rate: Scalar | None = None,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array]:
    r"""Adadelta: per-coordinate steps in the units of the parameters.

    A drop-in for ``optax.adadelta`` (same arguments, defaults and numbers),
    plus ``e_g_dtype`` and ``e_x_dtype`` for the storage of the two averages.

    Update::

        g_t = g_t + wd_t * theta_{t-1}              (only where weight_decay_mask)
        E[g^2]_t = rho * E[g^2]_{t-1} + (1 - rho) * g_t**2
        dx_t = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[dx^2]_t = rho * E[dx^2]_{t-1} + (1 - rho) * dx_t**2
        u_t = -lr_t * dx_t                 (u_t = +dx_t with learning_rate=None)

    Zeiler's method has no learning rate, and its step is ``-dx_t``. As a
    drop-in this rule keeps ``optax.adadelta`` 0.2.8's numbers, and there
    ``learning_rate=None`` (the default) applies no scaling at all, the sign
    flip included: the update is ``+dx_t``, a step *up* the gradient. Pass
    ``learning_rate=1.0`` for the paper's descent step. As in optax,
    ``E[dx^2]`` averages the steps before the learning rate scales them (the
    paper's steps are unscaled), and the weight decay is added to the
    gradient (an L2 penalty), so it enters both averages.

    Args:
        learning_rate: step size, a number or a schedule of the step count;
            ``None`` applies ``+dx_t`` unscaled and unflipped, as optax does
            (an ascent step; see above).
        rho: decay of both running averages, in [0, 1].
        eps: added inside both square roots; it also sets the size of the
            first steps, ``sqrt(eps)`` per coordinate.
        weight_decay: coupled decay rate (added to the gradient), a number or a
            schedule.
        weight_decay_mask: which leaves are decayed (pytree of booleans or a
            function of the parameters returning one); ``None`` decays every
            leaf.
        e_g_dtype: storage dtype of ``E[g^2]`` (default: the parameter's).
        e_x_dtype: storage dtype of ``E[dx^2]`` (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules.rules._adadelta import adadelta
        >>> tx = adadelta(1.0, rho=0.0, eps=1e-4)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([3.0, -4.0])},
        ...                            tx.init(params), params)
        >>> updates["w"].round(5)  # -sqrt(eps) * g / sqrt(g**2 + eps)
        Array([-0.01,  0.01], dtype=float32)

    References:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701,
        2012. Verified against ``optax.adadelta``.
    """
    if weight_decay_mask:
        grad = grad + weight_decay * param
    e_g = (1 - rho) * grad**2 + rho * e_g
    step = jnp.sqrt(e_x + eps) / jnp.sqrt(e_g + eps) * grad
    e_x = (1 - rho) * step**2 + rho * e_x
    scale = 1 if learning_rate is None else -learning_rate  # optax's None: +dx
    return scale * step, e_g, e_x


SPEC = RuleSpec(
    name="adadelta",
    factory=adadelta,
    hyperparams={"learning_rate": 0.1, "rho": 0.8, "eps": 1e-6},
    reference="optax.adadelta",
    reference_factory=optax.adadelta,
    reference_cases=(
        {"learning_rate": 1.0},
        {},  # optax's default, learning_rate=None: the unflipped +dx_t
        {"learning_rate": 0.5, "rho": 0.95, "eps": 1e-4},
        {"learning_rate": 0.5, "weight_decay": 0.1},
        {
            "learning_rate": 0.5,
            "weight_decay": 0.1,
            "weight_decay_mask": WEIGHT_DECAY_MASK,
        },
        {"learning_rate": 2.0, "rho": 0.0},
    ),
)
