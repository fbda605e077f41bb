"""SOAP: Adam run in the eigenbases of Shampoo's Kronecker factors."""

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_rules._core import (
    Array,
    Scalar,
    Slot,
    each_matrix,
    replicated,
    rule,
    sharded_like,
    stacked_like,
    whole_matrices,
)
from jaxopt_rules.rules._matrix_axes import is_flag, layer_shape
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


def preconditioned_axes(
    shape: tuple[int, ...], max_precondition_dim: int, precondition_1d: bool
) -> tuple[int, ...]:
    """The axes of a leaf that get a Kronecker factor and an eigenbasis.

    Every axis of a leaf of rank 2 or more no longer than
    ``max_precondition_dim``; a vector's only axis with ``precondition_1d``;
    none for scalars and empty leaves (Adam in the leaf's own basis there).

    Example:
        >>> preconditioned_axes((3, 20000, 4), 10000, False)
        (0, 2)
        >>> preconditioned_axes((5,), 10000, False), preconditioned_axes((5,), 9, True)
        ((), (0,))
    """
    if not shape or math.prod(shape) == 0:
        return ()
    if len(shape) == 1 and not precondition_1d:
        return ()
    return tuple(i for i, d in enumerate(shape) if d <= max_precondition_dim)


def _axes(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    return preconditioned_axes(
        shape, int(hyper["max_precondition_dim"]), bool(hyper["precondition_1d"])
    )


def _matrices_shape(
    shape: tuple[int, ...], hyper: Mapping[str, Any]
) -> tuple[int, ...]:
    """A leaf's factors (or eigenbases), one ``d x d`` matrix per axis, end to end.

    A leaf with no preconditioned axis keeps a 0-d placeholder instead of an
    empty array (orbax saves no zero-size arrays). A scanned leaf keeps one
    such row (or placeholder) per layer.
    """
    scanned = hyper["scanned_layers"]
    layer = layer_shape("soap", shape, scanned)
    size = sum(layer[i] ** 2 for i in _axes(layer, hyper))
    one = (size,) if size else ()
    return (shape[0], *one) if scanned else one


def _matrices_init(param: Array, hyper: Mapping[str, Any]) -> Array:
    """Zeros; a scanned leaf's rows stored by its layers' owners (explicit sharding)."""
    shape = _matrices_shape(tuple(jnp.shape(param)), hyper)
    zeros = jnp.zeros(shape, jnp.result_type(param))
    if not hyper["scanned_layers"]:
        return zeros
    return stacked_like(zeros, param, (0,))


def _split(flat: Array, shape: tuple[int, ...], axes: tuple[int, ...]) -> list[Any]:
    """Per axis of ``shape``: its ``d x d`` matrix cut from ``flat``, or ``None``."""
    out: list[Any] = [None] * len(shape)
    offset = 0
    for i in axes:
        d = shape[i]
        out[i] = flat[offset : offset + d * d].reshape(d, d)
        offset += d * d
    return out


def _join(matrices: list[Any], axes: tuple[int, ...], like: Array) -> Array:
    if not axes:
        return like
    return jnp.concatenate([matrices[i].reshape(-1) for i in axes])


def _rotate(x: Array, bases: list[Any], *, back: bool = False) -> Array:
    """``x`` with each axis multiplied by its eigenbasis (``Q^T``, or ``Q`` back).

    The axes are taken in order, each contracted and moved last, so that after
    all of them ``x`` has its own axis order again.
    """
    for q in bases:
        if q is None:
            x = jnp.moveaxis(x, 0, -1)
        else:
            x = jnp.tensordot(x, q, axes=([0], [1 if back else 0]))
    return x


def _gram(g: Array, axis: int) -> Array:
    """``G_(a) G_(a)^T``: ``g`` times itself over every axis but ``axis``."""
    others = [j for j in range(g.ndim) if j != axis]
    return jnp.tensordot(g, g, axes=(others, others))


def _eigenbasis(factor: Array) -> Array:
    """Eigenvectors of a factor, by decreasing eigenvalue (the reference's ``eigh``).

    A non-finite result (a failed decomposition) gives the identity: Adam in
    that axis's own basis, until the next refresh.
    """
    eye = jnp.eye(factor.shape[0], dtype=factor.dtype)
    _, vectors = jnp.linalg.eigh(factor + 1e-30 * eye)
    vectors = jnp.flip(vectors, axis=1)
    return jnp.where(jnp.all(jnp.isfinite(vectors)), vectors, eye)


def _power_step(factor: Array, basis: Array) -> tuple[Array, Array]:
    """One power iteration from ``basis``, orthonormalized by QR in float32.

    Returns:
        The new basis, its columns ordered by decreasing estimated
        eigenvalue ``diag(Q^T A Q)``, and that order (to permute the second
        moment's axis alike). A non-finite QR keeps the old basis.
    """
    product = factor @ basis
    estimate = jnp.sum(basis * product, axis=0)
    order = jnp.argsort(-estimate)
    q, _ = jnp.linalg.qr(product[:, order].astype(jnp.float32))
    q = q.astype(basis.dtype)
    keep = jnp.all(jnp.isfinite(q))
    return jnp.where(keep, q, basis), jnp.where(keep, order, jnp.arange(order.shape[0]))


@rule(
    name="soap",
    slots={
        "nu": Slot(square=True),
        "factors": Slot(
            shape=_matrices_shape,
            init=_matrices_init,
            dtype_arg="preconditioner_dtype",
        ),
        "eigenbases": Slot(
            shape=_matrices_shape,
            init=_matrices_init,
            dtype_arg="preconditioner_dtype",
        ),
    },
    per_leaf={"scanned_layers": False},
    per_leaf_is_leaf={"scanned_layers": is_flag},
    static=(
        "precondition_frequency",
        "max_precondition_dim",
        "precondition_1d",
        "correct_bias",
        "normalize_gradient",
    ),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "shampoo_beta": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
        "precondition_frequency": "> 0",
        "max_precondition_dim": "> 0",
    },
)
def soap(
    grad: Array,
    mu: Array,
    nu: Array,
    factors: Array,
    eigenbases: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 3e-3,
    b1: Scalar = 0.95,
    b2: Scalar = 0.95,
    shampoo_beta: Scalar | None = None,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.01,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_gradient: bool = False,
    scanned_layers: Any = None,
) -> tuple[Array, Array, Array, Array, Array]:
    r"""SOAP: Adam in the eigenbases of Shampoo's preconditioner.

    Each preconditioned axis ``a`` of a leaf keeps a Kronecker factor ``L_a``
    (an exponential average of ``G_(a) G_(a)^T``, the gradient times itself
    over every other axis) and an eigenbasis ``Q_a`` of it. The gradient is
    rotated into those bases (``G~ = G x_a Q_a^T`` over every axis), Adam's
    second moment is kept there, and the step is rotated back. The first
    step only gathers ``L`` and takes ``Q`` from its eigendecomposition (it
    does not move the parameters); after that ``Q`` is refreshed every
    ``precondition_frequency`` steps by one power iteration and a QR
    decomposition (in float32, as the reference), behind ``lax.cond`` (a
    ``lax.switch``): the state's shapes and types never change. The second
    moment's entries are reordered with the basis's columns (decreasing
    estimated eigenvalue). Axes longer than ``max_precondition_dim``, vectors
    (unless ``precondition_1d``) and scalars keep their own basis (Adam).

    ``s = t - 1``; ``x_a`` multiplies axis ``a`` by a matrix.

    Update::

        t = 1:  L_a = (1 - beta_s) G_(a) G_(a)^T;  Q_a = eigh(L_a) (decreasing);  u = 0
        t > 1:  G~  = G x_a Q_a^T
                m   = b1 m + (1 - b1) G            (in the parameter's basis)
                v   = b2 v + (1 - b2) G~**2        (in the rotated basis)
                N   = ((m x_a Q_a^T) / (sqrt(v) + eps)) x_a Q_a
                N   = N / (rms(N) + eps)            if normalize_gradient
                a   = lr_t sqrt(1 - b2**s) / (1 - b1**s) N   (without: lr_t N)
                u   = -a - lr_t wd (theta - a)
                L_a = beta_s L_a + (1 - beta_s) G_(a) G_(a)^T
                if s % precondition_frequency == 0:
                    P_a = L_a Q_a, its columns sorted by diag(Q_a^T P_a);
                    Q_a = qr(P_a);  v permuted alike along axis a

    ``beta_s`` is ``shampoo_beta``, or ``b2`` when it is ``None``. Decay is
    decoupled and applied after the step (the reference multiplies the new
    parameters by ``1 - lr wd``). Safeguards: ``1e-30 I`` is added before the
    eigendecomposition (the reference's); a decomposition that returns
    non-finite numbers leaves the identity (first step) or the previous
    basis (a refresh) in place, where the reference would retry in float64.

    State bytes per parameter of an ``m x n`` matrix: ``2 (m^2 + n^2) / (m n)``
    times the dtype's size for the factors and bases, besides Adam's two
    moments. Under ``quantized_state`` the moments are quantized and the
    factors and bases kept in full precision
    (:data:`~jaxopt_rules.quantized.FULL_PRECISION_SLOTS`), as the reference
    keeps them.

    Scanned layers (``scanned_layers``, as psgd-jax names the option): a
    marked leaf's first axis indexes a stack of layers (a model built with
    ``lax.scan``), and each layer is preconditioned on its own, exactly as
    if it were a separate leaf (its own factors, bases, second-moment
    order and, with ``normalize_gradient``, RMS). Under explicit sharding
    each device does the work of the layers it owns and stores their
    factors and bases (:func:`~jaxopt_rules._core.whole_matrices`: a leaf
    sharded over its layers' rows is moved onto the layer axis by one
    all-to-all each way, so state and eigendecompositions per device divide
    by the number of devices). An unmarked leaf runs replicated (every
    device does its whole-matrix work), its results sharded like the
    parameter again.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        shampoo_beta: decay of the Kronecker factors (``None``: ``b2``).
        eps: added to the root of the second moment.
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        precondition_frequency: steps between refreshes of the eigenbases
            (static).
        max_precondition_dim: longer axes are not preconditioned (static).
        precondition_1d: precondition vectors too (static).
        correct_bias: Adam's bias corrections (static).
        normalize_gradient: divide the rotated-back step by its RMS (static).
        scanned_layers: a pytree of booleans (a prefix of the params) or a
            function of the params returning one: leaves whose first axis
            indexes layers, each preconditioned on its own (``None``: none).
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        nu_dtype: storage dtype of ``v`` (likewise).
        preconditioner_dtype: storage dtype of the factors and eigenbases
            (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import soap
        >>> tx = soap(learning_rate=0.1, weight_decay=0.0)
        >>> params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
        >>> state = tx.init(params)
        >>> state.factors["w"].shape, state.factors["b"].shape  # 2*2 + 3*3; none
        ((13,), ())
        >>> grads = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
        >>> updates, state = tx.update(grads, state, params)
        >>> updates["w"]  # the first step gathers the factors, moves nothing
        Array([[0., 0., 0.],
               [0., 0., 0.]], dtype=float32)

    References:
        Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson and Kakade,
        "SOAP: Improving and Stabilizing Shampoo using Adam", ICLR 2025
        (arXiv:2409.11321). Verified against ``pytorch_optimizer.SOAP``
        4.1.0.
    """
    hyper = {
        "b1": b1,
        "b2": b2,
        "shampoo_beta": shampoo_beta,
        "eps": eps,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "precondition_frequency": precondition_frequency,
        "max_precondition_dim": max_precondition_dim,
        "precondition_1d": precondition_1d,
        "correct_bias": correct_bias,
        "normalize_gradient": normalize_gradient,
    }
    if not scanned_layers:
        # The whole-matrix work on replicated operands (explicit sharding).
        update, m, v, new_factors, new_bases = _soap_matrix(
            replicated(grad),
            replicated(mu),
            replicated(nu),
            factors,
            eigenbases,
            replicated(param),
            step,
            **hyper,
        )
    else:
        # Each layer on its own; under explicit sharding on the device that
        # owns it (and stores its factors and bases).

        def one(shared: dict[str, Any], *operands: Array) -> tuple[Array, ...]:
            return _soap_matrix(*operands, **shared)

        whole = [whole_matrices(x, (0,)) for x in (grad, mu, nu)]
        stacked = [stacked_like(x, grad, (0,)) for x in (factors, eigenbases)]
        update, m, v, new_factors, new_bases = each_matrix(
            one,
            *whole,
            *stacked,
            whole_matrices(param, (0,)),
            shared={**hyper, "step": step},
        )
        new_factors = stacked_like(new_factors, grad, (0,))
        new_bases = stacked_like(new_bases, grad, (0,))
    return (
        sharded_like(update.astype(grad.dtype), grad),
        sharded_like(m.astype(mu.dtype), mu),
        sharded_like(v.astype(nu.dtype), nu),
        new_factors,
        new_bases,
    )


def _soap_matrix(
    g: Array,
    m_old: Array,
    v_old: Array,
    factors: Array,
    eigenbases: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar,
    b2: Scalar,
    shampoo_beta: Scalar | None,
    eps: Scalar,
    weight_decay: Scalar,
    precondition_frequency: int,
    max_precondition_dim: int,
    precondition_1d: bool,
    correct_bias: bool,
    normalize_gradient: bool,
) -> tuple[Array, Array, Array, Array, Array]:
    """SOAP's step of one matrix (a leaf, or a scanned leaf's layer), whole."""
    shape = tuple(g.shape)
    axes = preconditioned_axes(shape, max_precondition_dim, precondition_1d)
    beta_s = b2 if shampoo_beta is None else shampoo_beta
    t = jnp.asarray(step)
    first = t == 1
    s = jnp.maximum(t - 1, 1)
    bases = _split(eigenbases, shape, axes)
    # Adam in the rotated basis, with the bases of the previous steps.
    m = m_old + (1 - b1) * (g - m_old)
    rotated = _rotate(g, bases)
    v = v_old + (1 - b2) * (rotated * rotated - v_old)
    direction = _rotate(_rotate(m, bases) / (jnp.sqrt(v) + eps), bases, back=True)
    if normalize_gradient:
        direction = direction / (jnp.sqrt(jnp.mean(direction * direction)) + eps)
    size = learning_rate
    if correct_bias:
        size = size * jnp.sqrt(1 - b2**s) / (1 - b1**s)
    adam = size * direction
    update = -adam - learning_rate * weight_decay * (param - adam)
    update = jnp.where(first, jnp.zeros_like(update), update)
    m = jnp.where(first, m_old, m)
    v = jnp.where(first, v_old, v)
    # The factors, then the bases: from eigh at the first step, by a power
    # iteration every precondition_frequency steps after it.
    stats = _split(factors, shape, axes)
    for a in axes:
        stats[a] = stats[a] + (1 - beta_s) * (
            _gram(g, a).astype(stats[a].dtype) - stats[a]
        )
    new_factors = _join(stats, axes, factors).astype(factors.dtype)

    def from_eigh(operands: tuple[Array, Array]) -> tuple[Array, Array]:
        _, v = operands
        fresh = [
            _eigenbasis(stats[a]) if a in axes else None for a in range(len(shape))
        ]
        return _join(fresh, axes, eigenbases).astype(eigenbases.dtype), v

    def by_power_step(operands: tuple[Array, Array]) -> tuple[Array, Array]:
        old, v = operands
        current = _split(old, shape, axes)
        for a in axes:
            current[a], order = _power_step(stats[a], current[a])
            v = jnp.take(v, order, axis=a)
        return _join(current, axes, old).astype(old.dtype), v

    def keep(operands: tuple[Array, Array]) -> tuple[Array, Array]:
        return operands

    refresh = (t - 1) % precondition_frequency == 0
    branch = jnp.where(first, 0, jnp.where(refresh, 1, 2))
    new_bases, v = jax.lax.switch(
        branch, (from_eigh, by_power_step, keep), (eigenbases, v)
    )
    return update, m, v, new_factors, new_bases


SPEC = RuleSpec(
    name="soap",
    factory=soap,
    hyperparams={"learning_rate": 1e-2, "weight_decay": 0.0},
    reads_whole_leaves=True,
    authors=AuthorsReference(
        requirement="pytorch-optimizer==4.1.0",
        optimizer="pytorch_optimizer.SOAP",
        # The reference orthonormalizes each refreshed basis by a QR in
        # float32 (as the authors' code), whatever the parameters' dtype; ours
        # too, but two LAPACK builds (torch's, jaxlib's) round a float32 QR
        # differently, so float64 runs with refreshes agree to 6e-7 - 4e-6
        # (the third case, without a refresh, to 3e-15). The cases use
        # eps = 1e-3: with the default 1e-8 the reference is ill-conditioned
        # on this problem (second-moment entries near zero in the rotated
        # basis: nudging the start by one part in 1e15 moves its final
        # parameters by 7e-7 to 1e-5, and its float32 run leaves its float64
        # run by 15-83%); at 1e-3 a nudge moves it by 1e-12 and float32 by
        # 1.5e-5 to 1.2e-4. Vectors are not preconditioned in these cases:
        # with precondition_1d the first factor g g^T has rank 1, and the
        # basis of its null space is whatever the eigensolver returns.
        tolerance={"float64": 1e-5, "float32": 1e-4},
        cases=(
            (
                {"learning_rate": 1e-2, "eps": 1e-3},
                {"lr": 1e-2, "eps": 1e-3},
            ),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.9,
                    "b2": 0.99,
                    "shampoo_beta": 0.9,
                    "eps": 1e-3,
                    "weight_decay": 0.1,
                    "precondition_frequency": 3,
                    "normalize_gradient": True,
                },
                {
                    "lr": 1e-2,
                    "betas": (0.9, 0.99),
                    "shampoo_beta": 0.9,
                    "eps": 1e-3,
                    "weight_decay": 0.1,
                    "precondition_frequency": 3,
                    "normalize_gradient": True,
                },
            ),
            (
                {
                    "learning_rate": 1e-2,
                    "max_precondition_dim": 3,
                    "correct_bias": False,
                    "precondition_frequency": 1000,
                },
                {
                    "lr": 1e-2,
                    "max_precondition_dim": 3,
                    "correct_bias": False,
                    "precondition_frequency": 1000,
                },
            ),
        ),
    ),
)
