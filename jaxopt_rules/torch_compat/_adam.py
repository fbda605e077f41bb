"""torch.optim.Adam and torch.optim.AdamW."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    decoupled_decay,
    lerp,
    signed,
)


SLOTS = {
    "exp_avg": Slot(),
    "exp_avg_sq": Slot(),
    "max_exp_avg_sq": Slot(when="amsgrad"),
}
CONSTRAINTS = {
    "lr": ">= 0",
    "beta1": "[0, 1)",
    "beta2": "[0, 1)",
    "eps": ">= 0",
    "weight_decay": ">= 0",
}
POSITIONAL = ("lr", "betas", "eps", "weight_decay", "amsgrad")
GROUPED = {"betas": ("beta1", "beta2")}
FLAGS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}


def adam_step(
    *,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Array | None,
    param: Array,
    step: Array,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> tuple[Array, Array, Array, Array | None]:
    """One leaf of torch's single-tensor Adam, in torch's order of operations."""
    grad = signed(grad, maximize)
    if not decoupled_weight_decay:
        grad = coupled_decay(grad, param, weight_decay)
    exp_avg = lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * (grad * grad)
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = jnp.sqrt(1 - beta2**step)
    second = exp_avg_sq
    if max_exp_avg_sq is not None:
        max_exp_avg_sq = jnp.maximum(max_exp_avg_sq, exp_avg_sq)
        second = max_exp_avg_sq
    denom = jnp.sqrt(second) / bias_correction2_sqrt + eps
    update = (-step_size) * (exp_avg / denom)
    if decoupled_weight_decay:
        update = decoupled_decay(update, param, lr, weight_decay)
    return update, exp_avg, exp_avg_sq, max_exp_avg_sq


@rule(
    name="torch_adam",
    slots=SLOTS,
    constraints=CONSTRAINTS,
    positional=POSITIONAL,
    grouped=GROUPED,
    ignored=FLAGS,
    keyword=("foreach", "maximize", "capturable", "differentiable", "fused"),
    storage_args=False,
)
def adam(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Array | None,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-3,
    beta1: Scalar = 0.9,
    beta2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> tuple[Array, Array, Array, Array | None]:
    r"""``torch.optim.Adam``: the same arguments, defaults and numbers.

    Update (``t`` counts from 1; ``lerp(a, b, w) = a + w (b - a)``)::

        g   = -g if maximize;  g = g + weight_decay * p   (coupled decay)
        p   = p * (1 - lr * weight_decay)                 (decoupled_weight_decay)
        m   = lerp(m, g, 1 - beta1)
        v   = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v)                             (amsgrad; raw v)
        p   = p - lr / (1 - beta1**t) * m / (sqrt(v_) / sqrt(1 - beta2**t) + eps)
                  (v_ = v_max with amsgrad, else v)

    Where optax differs: ``optax.amsgrad`` takes the maximum of the
    bias-corrected second moment, torch of the raw one; this follows torch.

    Args:
        lr: learning rate, a number or a schedule of the step count.
        betas: ``(beta1, beta2)``, the moments' decay rates.
        eps: added to the bias-corrected root of the second moment.
        weight_decay: L2 penalty added to the gradient (or, with
            ``decoupled_weight_decay``, parameter shrinkage ``p * (1 - lr * wd)``).
        amsgrad: keep the running maximum of the second moment.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        fused: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        decoupled_weight_decay: AdamW's decay instead of L2.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``); ``update``
        needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.adam(lr=0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.9, -1.9], dtype=float32)

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018
        (AMSGrad). Verified against ``torch.optim.Adam`` (torch 2.13).
    """
    del amsgrad  # decides whether max_exp_avg_sq exists
    return adam_step(
        grad=grad,
        exp_avg=exp_avg,
        exp_avg_sq=exp_avg_sq,
        max_exp_avg_sq=max_exp_avg_sq,
        param=param,
        step=step,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )


@rule(
    name="torch_adam",
    slots=SLOTS,
    constraints=CONSTRAINTS,
    positional=POSITIONAL,
    grouped=GROUPED,
    ignored=FLAGS,
    keyword=("maximize", "foreach", "capturable", "differentiable", "fused"),
    storage_args=False,
)
def adamw(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Array | None,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-3,
    beta1: Scalar = 0.9,
    beta2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> tuple[Array, Array, Array, Array | None]:
    r"""``torch.optim.AdamW``: Adam with decoupled weight decay, torch's defaults.

    :func:`adam` with ``decoupled_weight_decay=True``. The default
    ``weight_decay`` is torch's ``1e-2`` (optax's ``adamw``: ``1e-4``).

    Update::

        p = p * (1 - lr * weight_decay)
        then Adam's step on p (see :func:`adam`)

    Args:
        lr: learning rate, a number or a schedule of the step count.
        betas: ``(beta1, beta2)``, the moments' decay rates.
        eps: added to the bias-corrected root of the second moment.
        weight_decay: decoupled decay rate (multiplied by ``lr``).
        amsgrad: keep the running maximum of the (raw) second moment.
        maximize: maximise the objective instead of minimising it.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        fused: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.adamw(lr=0.1, weight_decay=0.5)
        >>> params = {"w": jnp.array([2.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]  # 2 * 0.95 - 0.1
        Array([1.8], dtype=float32)

    References:
        Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR
        2019. Verified against ``torch.optim.AdamW`` (torch 2.13).
    """
    del amsgrad  # decides whether max_exp_avg_sq exists
    return adam_step(
        grad=grad,
        exp_avg=exp_avg,
        exp_avg_sq=exp_avg_sq,
        max_exp_avg_sq=max_exp_avg_sq,
        param=param,
        step=step,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        decoupled_weight_decay=True,
    )
