"""C-AdamW: AdamW that drops the components whose momentum opposes the gradient."""

from typing import Any

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adam import adam_moments
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


MIN_KEPT_FRACTION = 1e-3
"""The floor of the kept fraction the mask is divided by (the authors' clamp)."""


@rule(
    name="cautious_adamw",
    slots={"mu": Slot(), "nu": Slot(square=True)},
    per_leaf={"mask": True},
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
)
def cautious_adamw(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    mask: Any = None,
) -> tuple[Array, Array, Array]:
    r"""C-AdamW: AdamW whose step keeps only the components the gradient agrees with.

    Adam's moments as usual; the components where the new first moment and
    the gradient have opposite signs (or either is zero) are dropped from
    the step, and the rest scaled up by the inverse of the kept fraction
    (at most 1000), so the step keeps its size. Decoupled weight decay is
    applied to every component, masked or not.

    Update::

        m   = b1 m + (1 - b1) g;     v = b2 v + (1 - b2) g**2
        phi = 1[m g > 0];            phi = phi / max(mean(phi), 1e-3)   (per leaf)
        u   = -lr_t (m phi / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)
              - lr_t wd theta

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the bias-corrected root of the second moment (the
            authors' default, 1e-6).
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        mask: a pytree of booleans (a prefix of the params) or a function of
            the params returning one: the leaves that decay (``None``: all).
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        nu_dtype: storage dtype of ``v`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import cautious_adamw
        >>> tx = cautious_adamw(learning_rate=0.1)
        >>> params = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
        >>> state = tx.init(params)
        >>> grads = {"w": jnp.array([1.0, -1.0, 0.0, 2.0])}
        >>> updates, state = tx.update(grads, state, params)
        >>> updates["w"]  # the zero gradient's component is dropped, the rest x 4/3
        Array([-0.1333332 ,  0.1333332 , -0.        , -0.13333328], dtype=float32)

    References:
        Liang, Chen, Liu and Liu, "Cautious Optimizers: Improving Training
        with One Line of Code", arXiv:2411.16085, 2024 (the authors' C-AdamW
        in their C-Optim repository: the mask divided by its clamped mean,
        as here; their first version divided by ``(sum + 1) / n``, as
        pytorch-optimizer's ``cautious=True`` and :func:`jaxopt_rules.cautious`
        still do). Verified against ``timm`` 1.0.31's ``AdamWLegacy`` with
        ``caution=True``, which computes the authors' formula.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    # The mask is recomputed where it is used (its mean, then the step).
    kept = jnp.mean((mu * grad > 0).astype(grad.dtype))
    scale = 1 / jnp.maximum(kept, MIN_KEPT_FRACTION)
    kept_mu = jnp.where(mu * grad > 0, mu * scale, jnp.zeros_like(mu))
    root = jnp.sqrt(nu) / jnp.sqrt(1 - b2**step)
    update = -(learning_rate / (1 - b1**step)) * kept_mu / (root + eps)
    if mask:
        update = update - learning_rate * weight_decay * param
    return update, mu, nu


SPEC = RuleSpec(
    name="cautious_adamw",
    factory=cautious_adamw,
    hyperparams={"learning_rate": 1e-2},
    reads_whole_leaves=True,
    authors=AuthorsReference(
        requirement="timm==1.0.31",
        optimizer="timm.optim.adamw.AdamWLegacy",
        # float64 only: the sign test m g > 0 of a component whose momentum
        # crosses zero goes either way with float32 rounding, and a flip
        # moves that component by a whole step; the reference's float32 run
        # ends 1.2e-3 from its float64 run on the test problem (this rule's
        # float32 run 2.5e-3), more than AdamW and C-AdamW differ in the
        # second case (8e-4). In float64 this rule is within 4e-15.
        tolerance={"float64": 1e-10},
        cases=(
            (
                {"learning_rate": 1e-2},
                {"lr": 1e-2, "eps": 1e-6, "weight_decay": 0.0, "caution": True},
            ),
            (
                {
                    "learning_rate": 3e-3,
                    "b1": 0.8,
                    "b2": 0.99,
                    "eps": 1e-8,
                    "weight_decay": 0.1,
                },
                {
                    "lr": 3e-3,
                    "betas": (0.8, 0.99),
                    "eps": 1e-8,
                    "weight_decay": 0.1,
                    "caution": True,
                },
            ),
        ),
    ),
)
