"""torch.optim.Muon: momentum orthogonalised by a Newton-Schulz iteration."""

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_rules._core import (
    Array,
    Scalar,
    Slot,
    replicated,
    round_to_bf16,
    rule,
)
from jaxopt_rules.torch_compat._common import decoupled_decay, lerp


_ADJUSTMENTS = (None, "original", "match_rms_adamw")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _newton_schulz(
    matrix: Array, coefficients: tuple[float, float, float], steps: int, eps: Scalar
) -> Array:
    """The Newton-Schulz iteration of torch's Muon, with its bfloat16 roundings.

    torch runs it on bfloat16 tensors: products accumulate in float32 and
    each ``addmm`` result is rounded once. Here the values are float32 rounded
    to bfloat16 precision at the same points. Always compiled (also when the
    step runs eagerly), so eager and jitted steps sum the products alike.
    """
    a, b, c = coefficients
    x = round_to_bf16(matrix.astype(jnp.float32))
    tall = matrix.shape[0] > matrix.shape[1]
    if tall:
        x = x.T
    norm = round_to_bf16(jnp.sqrt(jnp.sum(x * x)))
    x = round_to_bf16(
        x / jnp.maximum(norm, round_to_bf16(jnp.asarray(eps, jnp.float32)))
    )
    for _ in range(steps):
        gram = round_to_bf16(x @ x.T)
        gram_update = round_to_bf16(
            b * gram + c * (gram @ gram)
        )  # addmm(gram, gram, gram)
        x = round_to_bf16(a * x + gram_update @ x)  # addmm(x, gram_update, x)
    return x.T if tall else x


def _orthogonalise(
    matrix: Array, coefficients: tuple[float, float, float], steps: int, eps: Scalar
) -> Array:
    """:func:`_newton_schulz` on the whole matrix, also when it is sharded.

    Under a mesh with ``Explicit`` axes the matrix products of a sharded
    matrix have no implied output sharding: the iteration runs on a
    replicated copy and the result is sharded back like the input.
    """
    whole = replicated(matrix)
    if whole is matrix:
        return _newton_schulz(matrix, coefficients, steps, eps)
    ortho = _newton_schulz(whole, coefficients, steps, eps)
    return jax.sharding.reshard(ortho, jax.typeof(matrix).sharding.spec)


def _check_structure(hyper: Mapping[str, Any]) -> None:
    """The checks torch makes of ``ns_steps``, ``ns_coefficients``, ``adjust_lr_fn``."""
    if hyper["ns_steps"] >= 100:
        raise ValueError(
            f"torch_muon: ns_steps must be below 100, got {hyper['ns_steps']!r}"
        )
    coefficients = hyper["ns_coefficients"]
    try:
        count = len(coefficients)
    except TypeError:
        count = None
    if count != 3:
        raise ValueError(
            f"torch_muon: ns_coefficients must be (a, b, c), got {coefficients!r}"
        )
    if hyper["adjust_lr_fn"] not in _ADJUSTMENTS:
        raise ValueError(
            f"torch_muon: adjust_lr_fn must be one of {_ADJUSTMENTS}, "
            f"got {hyper['adjust_lr_fn']!r}"
        )


@rule(
    name="torch_muon",
    slots={"momentum_buffer": Slot()},
    static=("ns_coefficients", "ns_steps", "adjust_lr_fn"),
    constraints={"lr": ">= 0", "momentum": ">= 0", "weight_decay": ">= 0"},
    positional=(
        "lr",
        "weight_decay",
        "momentum",
        "nesterov",
        "ns_coefficients",
        "eps",
        "ns_steps",
        "adjust_lr_fn",
    ),
    storage_args=False,
    check=_check_structure,
)
def muon(
    grad: Array,
    momentum_buffer: Array,
    param: Array,
    *,
    lr: Scalar = 1e-3,
    weight_decay: Scalar = 0.1,
    momentum: Scalar = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
    eps: Scalar = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> tuple[Array, Array]:
    r"""``torch.optim.Muon``: the same arguments, defaults and (bfloat16) numbers.

    For 2-D parameters only (torch's ``(out, in)`` layout: ``A, B = shape``);
    route other leaves elsewhere with ``optax.partition``.

    Update::

        b = lerp(b, g, 1 - momentum)
        d = lerp(g, b, momentum) if nesterov else b
        X = NS(d): in bfloat16, X = d / max(|d|_F, eps) (transposed when A > B),
            then ns_steps times  G = X X^T;  X = a X + (b G + c G G) X
        p = p * (1 - lr * weight_decay) - lr * s * X
            s = sqrt(max(1, A / B))           (adjust_lr_fn None or "original")
            s = 0.2 * sqrt(max(A, B))         ("match_rms_adamw")

    The Newton-Schulz iteration runs in bfloat16 as in torch, with float32
    accumulation in the products and one rounding per ``addmm``; XLA's and
    torch's kernels sum in different orders, so a few elements differ by one
    bfloat16 ulp (see ``tests/test_torch_compat.py`` for the tolerance).

    Where optax differs: ``optax.contrib.muon`` bias-corrects the momentum,
    runs the iteration in the input dtype with ``x / (|x| + 1e-8)``, scales by
    fan-out over fan-in from dimension numbers, and sends non-2-D leaves to
    AdamW.

    Args:
        lr: learning rate, a number or a schedule of the step count.
        weight_decay: decoupled decay rate (multiplied by the unadjusted lr).
        momentum: momentum factor of the buffer (and of the Nesterov blend).
        nesterov: blend the gradient and the buffer before orthogonalising.
        ns_coefficients: ``(a, b, c)`` of the quintic iteration.
        eps: floor of the Frobenius norm used to normalise.
        ns_steps: iterations (fewer than 100).
        adjust_lr_fn: ``None`` or ``"original"`` (``sqrt(max(1, A / B))``),
            or ``"match_rms_adamw"`` (``0.2 * sqrt(max(A, B))``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``momentum_buffer``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.muon(lr=0.02)
        >>> params = {"w": jnp.eye(3)}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates["w"].shape
        (3, 3)

    References:
        Jordan et al., "Muon: An optimizer for hidden layers in neural
        networks", 2024 (kellerjordan.github.io/posts/muon). Verified against
        ``torch.optim.Muon`` (torch 2.13).
    """
    if grad.ndim != 2:
        raise ValueError(
            f"torch_compat.muon: Muon updates 2-D parameters only, got a leaf of "
            f"shape {grad.shape}; route other leaves to another optimizer with "
            "optax.partition (as torch users pass them to a second optimizer)"
        )
    momentum_buffer = lerp(momentum_buffer, grad, 1 - momentum)
    direction = lerp(grad, momentum_buffer, momentum) if nesterov else momentum_buffer
    a, b, c = ns_coefficients  # hashable for the compiled iteration
    ortho = _orthogonalise(direction, (a, b, c), ns_steps, eps)
    rows, cols = grad.shape
    if adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = math.sqrt(max(1.0, rows / cols))
    update = (-lr * ratio) * ortho.astype(grad.dtype)
    update = decoupled_decay(update, param, lr, weight_decay)
    return update, momentum_buffer
