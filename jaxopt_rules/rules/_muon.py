"""Muon: momentum orthogonalised by Newton-Schulz iterations, AdamW elsewhere."""

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax.contrib
from optax.contrib import MuonDimensionNumbers

from jaxopt_rules._core import (
    Array,
    Scalar,
    Slot,
    round_to_bf16,
    rule,
    sharded_like,
    whole_matrices,
)
from jaxopt_rules.rules._adam import adam_direction, adam_moments
from jaxopt_rules.rules._matrix_axes import check_dimension_numbers, split_axes
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, AuthorsReference, RuleSpec


_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
_STANDARD = (3.4445, -4.7750, 2.0315)
_PRESETS: dict[str, Any] = {
    "standard": _STANDARD,
    # Ahn et al.'s Dion coefficients, one row per iteration.
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
_TWO_D = "2-d"
"""A leaf's dimension numbers when the argument is ``None``: a 2-d leaf is a
matrix with the default ``MuonDimensionNumbers()``; other leaves get AdamW."""
_TORCH_LAYOUT = MuonDimensionNumbers(reduction_axis=1, output_axis=0)
"""A PyTorch ``(out, in)`` weight: fan-out rows, fan-in columns."""
_FIRST_STEP_EPS = 1e-8


def _torch_layout_matrices(params: Any) -> Any:
    """Every 2-d leaf read as a PyTorch weight; the others AdamW leaves."""
    return jax.tree.map(
        lambda p: _TORCH_LAYOUT if jnp.ndim(p) == 2 else None, params
    )  # optax's AOL and Schatten rescalings use their own eps


def _is_dims(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def _layout(shape: tuple[int, ...], dims: Any) -> dict[str, Any] | None:
    """How a leaf is a stack of matrices, or None for an AdamW leaf."""
    if dims is None:
        return None
    if dims == _TWO_D:
        if len(shape) != 2:
            return None
        dims = MuonDimensionNumbers()
    if len(shape) < 2:
        raise ValueError(
            f"muon: a leaf of shape {shape} has dimension numbers {dims}, but "
            "Muon's leaves must have two or more axes (give it None: AdamW)"
        )
    batch, rows, cols = split_axes("muon", shape, dims)
    order = batch + rows + cols
    size = lambda axes: math.prod(shape[a] for a in axes)
    return {
        "batch": batch,
        "order": order,
        "flat": (size(batch), size(rows), size(cols)),
        "unflat": tuple(shape[a] for a in order),
        "inverse": tuple(sorted(range(len(shape)), key=lambda i: order[i])),
        "fan_in": size(rows),
        "fan_out": size(cols),
    }


def _nu_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """AdamW's second moment: the leaf's shape, or one zero for a Muon leaf."""
    return (1,) if _layout(shape, hyper["muon_weight_dimension_numbers"]) else shape


def _coefficients(hyper: Mapping[str, Any]) -> Any:
    coeffs = hyper["ns_coeffs"]
    if isinstance(coeffs, str):
        if coeffs not in _PRESETS:
            raise ValueError(
                f"muon: unknown ns_coeffs preset {coeffs!r} (presets: "
                f"{', '.join(_PRESETS)})"
            )
        coeffs = _PRESETS[coeffs]
    return coeffs


def _check(hyper: Mapping[str, Any]) -> None:
    if hyper["ns_precision"] not in (None, "bfloat16"):
        raise ValueError(
            f"muon: ns_precision must be None or 'bfloat16', got "
            f"{hyper['ns_precision']!r}"
        )
    if hyper["ns_precision"] and hyper["preconditioning"] != "frobenius":
        raise ValueError(
            "muon: ns_precision='bfloat16' (the author's iteration) takes the "
            f"'frobenius' preconditioning, got {hyper['preconditioning']!r}"
        )
    if hyper["preconditioning"] not in _PRECONDITIONINGS:
        raise ValueError(
            f"muon: preconditioning must be one of {_PRECONDITIONINGS}, got "
            f"{hyper['preconditioning']!r}"
        )
    shape = jnp.shape(jnp.asarray(_coefficients(hyper)))
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(f"muon: ns_coeffs must have shape (3,) or (n, 3), got {shape}")
    if len(shape) == 2 and shape[0] > hyper["ns_steps"]:
        raise ValueError(
            f"muon: ns_coeffs has {shape[0]} rows, more than ns_steps="
            f"{hyper['ns_steps']} (optax's 'Not enough coeffs' check)"
        )
    check_dimension_numbers(
        "muon",
        "muon_weight_dimension_numbers",
        hyper["muon_weight_dimension_numbers"],
        _is_dims,
        "a MuonDimensionNumbers, a tree of them (None: an AdamW leaf)",
    )


def _newton_schulz(x: Array, c: Array, first: bool, preconditioning: str) -> Array:
    """One quintic iteration ``c0 x + (c1 A + c2 A A) x`` with ``A = x x^H``.

    The AOL and Schatten-4 preconditionings rescale inside the first one.
    """
    # (Schatten's first rescaling takes x x^T, without the conjugate, as optax.)
    a = x @ x.T if first and preconditioning == "schatten" else x @ x.T.conj()
    if first and preconditioning == "aol":
        rescaling = jnp.clip(jnp.abs(a).sum(axis=-1), min=_FIRST_STEP_EPS)
        s = jnp.expand_dims(jax.lax.rsqrt(rescaling), -1)
        x, a = x * s, a * s * s.transpose(-1, -2)
    elif first and preconditioning == "schatten":
        norm = jnp.linalg.norm(a, ord="fro", axis=(-2, -1))
        s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(norm, min=_FIRST_STEP_EPS)), (0, -1))
        x, a = x * s, a * s**2
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _newton_schulz_bf16(m: Array, rows: list[Any], eps: Scalar) -> Array:
    """The iteration as Keller Jordan's code runs it on bfloat16 tensors.

    Every operation's result rounded to bfloat16 (products accumulated in
    float32), in the reference's order: ``X / (|X|_F + eps)``, then
    ``A = X X^T``, ``B = b A + (c A) A``, ``X = a X + B X``.
    """
    r = round_to_bf16
    x = r(m.astype(jnp.float32))
    norm = r(jnp.sqrt(jnp.sum(x * x)))
    x = r(x / r(norm + eps))
    for row in rows:
        a, b, c = row[0], row[1], row[2]
        gram = r(x @ x.T)
        update = r(r(b * gram) + r(r(c * gram) @ gram))
        x = r(r(a * x) + r(update @ x))
    return x.astype(m.dtype)


def _orthogonalize(
    x: Array,
    layout: Mapping[str, Any],
    coeffs: Any,
    steps: int,
    how: str,
    eps: Scalar,
    bfloat16: bool = False,
) -> Array:
    """Newton-Schulz on each matrix of a leaf (batch axes vmapped)."""

    def one(m: Array) -> Array:
        # ``m`` is (reduction, output): the transpose of a PyTorch weight.
        # The author's bfloat16 code iterates on the (out, in) weight, also
        # when it is square, whose rounding then differs from m's.
        tall = m.shape[0] >= m.shape[1] if bfloat16 else m.shape[0] > m.shape[1]
        if tall:
            m = m.T
        if bfloat16:
            c = jnp.asarray(coeffs, jnp.float32)
            rows = [c] * steps if c.ndim == 1 else [c[i] for i in range(c.shape[0])]
            m = _newton_schulz_bf16(m, rows, eps)
            return m.T if tall else m
        if how == "frobenius":
            m = m / (jnp.linalg.norm(m, ord="fro") + eps)
        elif how == "spectral":
            m = m / (jnp.linalg.norm(m, ord=2) + eps)
        c = jnp.asarray(coeffs, m.dtype)
        rows = [c] * steps if c.ndim == 1 else [c[i] for i in range(c.shape[0])]
        for i, row in enumerate(rows):
            m = _newton_schulz(m, row, i == 0, how)
        return m.T if tall else m

    stacked = jnp.transpose(x, layout["order"]).reshape(layout["flat"])
    out = jax.vmap(one)(stacked).reshape(layout["unflat"])
    return jnp.transpose(out, layout["inverse"])


@rule(
    name="muon",
    slots={"nu": Slot(shape=_nu_shape, square=True)},
    static=(
        "ns_coeffs",
        "ns_steps",
        "preconditioning",
        "bias_correction",
        "ns_precision",
    ),
    per_leaf={"weight_decay_mask": True, "muon_weight_dimension_numbers": _TWO_D},
    per_leaf_is_leaf={"muon_weight_dimension_numbers": _is_dims},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "beta": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
        "adam_b1": "[0, 1)",
        "adam_b2": "[0, 1)",
        "adam_eps_root": ">= 0",
        "adam_weight_decay": ">= 0",
        "ns_steps": ">= 0",
    },
    positional=(
        "learning_rate",
        "ns_coeffs",
        "ns_steps",
        "beta",
        "eps",
        "weight_decay",
        "weight_decay_mask",
        "mu_dtype",
    ),
    keyword=(
        "nesterov",
        "adaptive",
        "preconditioning",
        "adam_b1",
        "adam_b2",
        "adam_eps_root",
        "adam_weight_decay",
        "adam_learning_rate",
        "muon_weight_dimension_numbers",
        "consistent_rms",
        "bias_correction",
        "ns_precision",
    ),
    check=_check,
)
def muon(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    ns_coeffs: Any = _STANDARD,
    ns_steps: int = 5,
    beta: Scalar = 0.95,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: Any = None,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Scalar = 0.9,
    adam_b2: Scalar = 0.999,
    adam_eps_root: Scalar = 0.0,
    adam_weight_decay: Scalar = 0.0,
    adam_learning_rate: Scalar | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: Scalar | None = None,
    bias_correction: bool = True,
    ns_precision: str | None = None,
) -> tuple[Array, Array, Array]:
    r"""Muon: SGD momentum whose matrix updates are orthogonalised; AdamW elsewhere.

    A drop-in for ``optax.contrib.muon``: same arguments, defaults and numbers,
    as one rule with one state (optax partitions the tree between a Muon
    chain and ``optax.adamw``). Matrix leaves (2-d ones by default, or as
    ``muon_weight_dimension_numbers`` says) take Muon steps; the others take
    AdamW steps with ``adam_*`` hyperparameters, Muon's ``eps`` and
    ``nesterov``, and ``adam_learning_rate`` (default: ``learning_rate``).

    Update::

        (a matrix leaf; t = 1 on the first update)


        m_t = beta m_{t-1} + (1 - beta) g_t
        M_t = beta m_t / (1 - beta**(t+1)) + (1 - beta) g_t / (1 - beta**t)
              (nesterov; else m_t / (1 - beta**t))
        X_0 = M_t / (||M_t||_F + eps)          ('frobenius'; 'spectral': ||.||_2;
                                                'aol', 'schatten': no scaling,
                                                a rescaled first iteration)
        X_{k+1} = a X_k + (b A_k + c A_k A_k) X_k,   A_k = X_k X_k^H
              (ns_steps times with (a, b, c) = ns_coeffs, or one row of
              ns_coeffs per iteration; on the wide orientation)
        O_t = X_K  (times <M_t, X_K> with adaptive)
        u_t = -lr_t (s O_t + weight_decay * mask * theta_t)
        s = sqrt(max(1, fan_out / fan_in))   (consistent_rms: sqrt(max(fan_in,
            fan_out)) * consistent_rms)

    Leaves of three or more axes are stacks of matrices: reduction axes are
    the rows, output axes the columns, the others batch axes, each matrix
    orthogonalised on its own. The state is ``mu`` (every leaf) and ``nu``
    (AdamW leaves; one zero for a Muon leaf, where optax keeps nothing);
    ``jr.from_optax`` and ``jr.to_optax`` merge optax's two masked ``mu``
    trees into one and back. Under an explicit mesh, each device iterates
    on whole matrices (:func:`~jaxopt_rules._core.whole_matrices`): a stack
    sharded over its matrices' own axes is resharded, by one all-to-all, so
    that each device owns whole matrices of it (a ``(L, m, n)`` stack on
    ``N`` devices: ``L / N`` matrices each, when ``N`` divides ``L``); a
    lone matrix is gathered and iterated on every device. Under
    ``shard_map``, shard stacks along their batch axes: each device then
    sees whole matrices.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        ns_coeffs: the quintic's coefficients ``(a, b, c)``, a tuple of such
            rows (one per iteration, at most ``ns_steps`` of them), or a
            preset: ``'standard'`` or ``'dion'``.
        ns_steps: Newton-Schulz iterations (with one row of coefficients).
        beta: momentum decay.
        eps: added to the norm before the iterations, and AdamW's epsilon.
        weight_decay: decoupled weight decay of Muon leaves.
        weight_decay_mask: which Muon leaves decay (a tree of bools or a
            function of the params); ``None``: all.
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        nesterov: Nesterov momentum (Muon and AdamW leaves).
        adaptive: scale the orthogonalised update by ``<M_t, O_t>``
            (Bernstein and Newhouse's dual norm).
        preconditioning: ``'frobenius'``, ``'spectral'``, ``'aol'`` or
            ``'schatten'`` (real matrices only: optax's rescaling diverges on
            complex ones, and the drop-in refuses them).
        adam_b1: AdamW's first-moment decay.
        adam_b2: AdamW's second-moment decay.
        adam_eps_root: AdamW's epsilon inside the square root.
        adam_weight_decay: AdamW's decoupled weight decay.
        adam_learning_rate: AdamW's step size; ``None``: ``learning_rate``.
        muon_weight_dimension_numbers: ``None`` (2-d leaves are Muon's), one
            ``optax.contrib.MuonDimensionNumbers`` for every leaf, a tree of
            them (``None``: an AdamW leaf), or a function of the params.
        consistent_rms: ``None`` (width scaling), or the target RMS of
            Moonlight's scaling (0.2 matches AdamW).
        bias_correction: divide the momentum by ``1 - beta**t`` (optax);
            ``False``: Keller Jordan's Muon, ``M_t = beta m_t + (1 - beta)
            g_t`` (nesterov) or ``m_t`` (static).
        ns_precision: ``None`` (the iteration in the momentum's dtype, optax) or
            ``'bfloat16'``: every operation of the iteration, and the
            scaled result, rounded to bfloat16 as the author's code computes
            it on bfloat16 tensors, normalising by ``|X|_F + eps`` (static;
            ``'frobenius'`` preconditioning).
        nu_dtype: storage dtype of AdamW's second moment (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs the
        params.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
        >>> tx = jr.muon(0.02)
        >>> state = tx.init(params)
        >>> state.nu["w"].shape, state.nu["b"].shape  # w: Muon, b: AdamW
        ((1,), (4,))

    References:
        Jordan et al., "Muon: An optimizer for hidden layers in neural
        networks", 2024 (and modded-nanogpt).
        Bernstein and Newhouse, "Old Optimizer, New Norm: An Anthology",
        2024 (``adaptive``).
        Liu et al., "Muon is Scalable for LLM Training", 2025
        (``consistent_rms``).
        Boissin et al., "Turbo-Muon", 2025 (``'aol'``); Grishina et al.,
        2025 (``'schatten'``); Ahn et al., "Dion", 2025 (``'dion'``).
        Verified against ``optax.contrib.muon``.
    """
    layout = _layout(grad.shape, muon_weight_dimension_numbers)
    if layout is not None and preconditioning == "schatten" and jnp.iscomplexobj(grad):
        raise TypeError(
            "muon: preconditioning='schatten' is not defined for complex "
            "matrices (optax's rescaling takes x @ x.T, without the conjugate, "
            "and the iterations diverge to NaN); use 'frobenius', 'spectral' or "
            "'aol'"
        )
    if layout is None:
        mu, nu = adam_moments(grad, mu, nu, b1=adam_b1, b2=adam_b2)
        direction = adam_direction(
            grad,
            mu,
            nu,
            step,
            b1=adam_b1,
            b2=adam_b2,
            eps=eps,
            eps_root=adam_eps_root,
            nesterov=nesterov,
        )
        rate = learning_rate if adam_learning_rate is None else adam_learning_rate
        return -rate * (direction + adam_weight_decay * param), mu, nu
    mu = (1 - beta) * grad + beta * mu
    if not bias_correction:
        mu_hat = beta * mu + (1 - beta) * grad if nesterov else mu
    elif nesterov:
        mu_hat = beta * (mu / (1 - beta ** (step + 1))) + (1 - beta) * (
            grad / (1 - beta**step)
        )
    else:
        mu_hat = mu / (1 - beta**step)
    # Under explicit sharding each device iterates on whole matrices: those
    # of a stack it owns, or (a lone sharded matrix) the matrix gathered.
    ns_input = whole_matrices(mu_hat, layout["batch"])
    coeffs = _coefficients({"ns_coeffs": ns_coeffs})
    bfloat16 = ns_precision == "bfloat16"
    x = _orthogonalize(
        ns_input, layout, coeffs, ns_steps, preconditioning, eps, bfloat16
    )
    x = sharded_like(x, mu_hat)
    if adaptive:
        x = jnp.sum(mu_hat.conj() * x) * x
    fan_in, fan_out = layout["fan_in"], layout["fan_out"]
    if consistent_rms is None:
        x = jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * x
    else:
        x = jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms * x
    if bfloat16:
        x = round_to_bf16(x)  # the reference scales its bfloat16 result in bfloat16
    if weight_decay_mask:
        x = x + weight_decay * param
    return -learning_rate * x, mu, nu


SPEC = RuleSpec(
    name="muon",
    factory=muon,
    hyperparams={"learning_rate": 0.05},
    reads_whole_leaves=True,
    reference="optax.contrib.muon",
    reference_factory=optax.contrib.muon,
    reference_cases=(
        {"learning_rate": 2e-2},
        {
            "learning_rate": 2e-2,
            "nesterov": False,
            "weight_decay": 0.1,
            "weight_decay_mask": WEIGHT_DECAY_MASK,
            "adam_weight_decay": 0.05,
            "adam_learning_rate": 1e-2,
        },
        # (Learning rates at which 100 float64 steps are not chaotic: with the
        # Dion coefficients at 2e-2, optax's own trajectory, jitted as one
        # scan or step by step, differs by 1.8e-4 after 100 steps.)
        {"learning_rate": 5e-3, "preconditioning": "spectral", "adaptive": True},
        {"learning_rate": 2e-2, "preconditioning": "aol", "ns_steps": 4},
        {"learning_rate": 2e-2, "preconditioning": "schatten", "consistent_rms": 0.2},
        {"learning_rate": 5e-3, "ns_coeffs": "dion", "beta": 0.9},
        {
            "learning_rate": 1e-2,
            "muon_weight_dimension_numbers": {
                "dense": {"w": MuonDimensionNumbers(), "b": None},
                "conv": [MuonDimensionNumbers(reduction_axis=1, output_axis=(2, 3))],
                "scale": None,
                "frozen": None,
            },
        },
    ),
    authors=AuthorsReference(
        requirement="muon-optimizer==0.1.0",
        optimizer="muon.SingleDeviceMuon",
        matrices_only=True,
        # The author's iteration runs in bfloat16 whatever the parameters'
        # dtype. With ns_precision=bfloat16 this rule rounds at the same points:
        # the first case's 100 steps are bit for bit the reference's in
        # float64 and float32, the second's within 1.7e-15 in float64. In
        # float32 its decay and momentum (p (1 - lr wd) - lr X in the
        # reference, an additive update here) round the parameters 1 ulp
        # apart, which moves some later bfloat16 roundings of the iteration's
        # input by 2**-8: 1.1e-3 and 1.8e-3 after 100 steps on the two test
        # problems.
        tolerance={"float64": 1e-10, "float32": 5e-3},
        cases=(
            (
                {
                    "learning_rate": 0.02,
                    "eps": 1e-7,
                    "bias_correction": False,
                    "ns_precision": "bfloat16",
                    "muon_weight_dimension_numbers": _torch_layout_matrices,
                },
                {"lr": 0.02},
            ),
            (
                {
                    "learning_rate": 0.02,
                    "beta": 0.9,
                    "weight_decay": 0.1,
                    "eps": 1e-7,
                    "bias_correction": False,
                    "ns_precision": "bfloat16",
                    "muon_weight_dimension_numbers": _torch_layout_matrices,
                },
                {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.1},
            ),
        ),
    ),
)
