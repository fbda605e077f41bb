"""PSGD Kron: Li's preconditioned SGD with one Kronecker factor per axis."""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules._core import (
    Array,
    Scalar,
    Slot,
    composite,
    init_with_last_field,
    initial_key,
    random_like,
    replicated,
    rule,
    sharded_like,
    split_last_field,
    stacked_like,
    whole_matrices,
)
from jaxopt_rules.rules._matrix_axes import is_flag, layer_shape
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


MEMORY_SAVE_MODES = (None, "smart_one_diag", "one_diag", "all_diag")
BALANCE_PROBABILITY = 0.01
"""How often (per preconditioner update) the factors' scales are rebalanced."""


def psgd_update_probability(
    max_prob: float = 1.0,
    min_prob: float = 0.03,
    decay: float = 0.001,
    flat_start: int = 500,
) -> Callable[[Array], Array]:
    """PSGD Kron's default schedule of the preconditioner-update probability.

    ``min(max(max_prob * exp(-decay (n - flat_start)), min_prob), max_prob)``
    of the step ``n`` (counted from 1): every step for the first
    ``flat_start`` steps, then an exponential decay to ``min_prob`` (the
    default reaches 0.03 after about 4,000 steps).

    Example:
        >>> import jaxopt_rules as jr
        >>> schedule = jr.psgd_update_probability()
        >>> float(schedule(100)), round(float(schedule(2000)), 3)
        (1.0, 0.223)
    """

    def schedule(n: Array) -> Array:
        value = max_prob * jnp.exp(-decay * (jnp.asarray(n) - flat_start))
        return jnp.minimum(jnp.maximum(value, min_prob), max_prob)

    return schedule


def triangular_axes(
    shape: tuple[int, ...],
    max_size_triangular: int,
    min_ndim_triangular: int,
    memory_save_mode: str | None,
) -> tuple[bool, ...]:
    """Per axis of a leaf: whether its factor is a triangular matrix (else diagonal).

    Diagonal: axes of length 1 or longer than ``max_size_triangular``, every
    axis of a leaf with fewer than ``min_ndim_triangular`` axes, the longest
    axis (``"one_diag"``; the last of equals), the longest axis where it is
    longer than every other (``"smart_one_diag"``, kron-torch's mode) or
    every axis (``"all_diag"``).

    Example:
        >>> triangular_axes((3, 1, 9000), 8192, 2, None)
        (True, False, False)
        >>> triangular_axes((4, 4), 8192, 2, "one_diag")
        (True, False)
        >>> triangular_axes((4, 4), 8192, 2, "smart_one_diag")
        (True, True)
    """
    diagonal = [False] * len(shape)
    longest = max(shape, default=0)
    unique = sum(d == longest for d in shape) == 1 and len(shape) > 1
    if memory_save_mode == "one_diag" or (
        memory_save_mode == "smart_one_diag" and unique
    ):
        if shape:
            diagonal[max(i for i, d in enumerate(shape) if d == longest)] = True
    elif memory_save_mode == "all_diag":
        diagonal = [True] * len(shape)
    return tuple(
        not (
            d == 1
            or d > max_size_triangular
            or len(shape) < min_ndim_triangular
            or diagonal[i]
        )
        for i, d in enumerate(shape)
    )


def merged_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A leaf of three or more axes as a matrix: kron-torch's ``merge_dims``.

    ``(prod(shape[:-1]), shape[-1])``; a leaf of at most two axes is
    unchanged. (kron-torch picks whichever of this and
    ``(shape[0], prod(shape[1:]))`` has the smaller signed difference of
    second and first length: for axes of positive length, always this one.)

    Example:
        >>> merged_shape((2, 3, 4)), merged_shape((3, 3, 64, 32)), merged_shape((5,))
        ((6, 4), (576, 32), (5,))
    """
    if len(shape) <= 2:
        return shape
    return (int(np.prod(shape[:-1])), shape[-1])


def _fitted_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """The shape the factors are fitted to: a layer's, merged by ``merge_dims``."""
    layer = layer_shape("psgd_kron", shape, hyper["scanned_layers"])
    return merged_shape(layer) if hyper["merge_dims"] else layer


def _axes(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[bool, ...]:
    return triangular_axes(
        tuple(shape),
        int(hyper["max_size_triangular"]),
        int(hyper["min_ndim_triangular"]),
        hyper["memory_save_mode"],
    )


def _q_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """Every factor of a leaf end to end (a scalar's one number: ``(1,)``).

    A scanned leaf keeps one such row per layer: ``(layers, size)``.
    """
    layer = _fitted_shape(shape, hyper)
    tri = _axes(layer, hyper)
    size = sum(d * d if t else d for d, t in zip(layer, tri, strict=True)) or 1
    return (shape[0], size) if hyper["scanned_layers"] else (size,)


def _q_init(param: Array, hyper: Mapping[str, Any]) -> Array:
    """Each factor ``s I`` (a diagonal: ``s``), ``s`` the init scale's k-th root.

    A scanned leaf's rows (one per layer) are stored by the layers' owners
    under explicit sharding (:func:`~jaxopt_rules._core.stacked_like`).
    """
    shape = tuple(jnp.shape(param))
    scanned = hyper["scanned_layers"]
    layer = _fitted_shape(shape, hyper)
    scale = jnp.asarray(hyper["preconditioner_init_scale"])
    if not layer:
        one = jnp.reshape(scale, (1,))
    else:
        scale = scale ** (1 / len(layer))
        pieces = [
            (jnp.eye(d) if t else jnp.ones(d)).reshape(-1)
            for d, t in zip(layer, _axes(layer, hyper), strict=True)
        ]
        one = scale * jnp.concatenate(pieces)
    if not scanned:
        return one
    return stacked_like(jnp.broadcast_to(one, (shape[0], *one.shape)), param, (0,))


def _unpack(q: Array, shape: tuple[int, ...], tri: tuple[bool, ...]) -> list[Array]:
    if not shape:
        return [q[0]]
    out, at = [], 0
    for d, t in zip(shape, tri, strict=True):
        n = d * d if t else d
        out.append(q[at : at + n].reshape((d, d) if t else (d,)))
        at += n
    return out


def _pack(factors: list[Array], scalar: bool) -> Array:
    if scalar:
        return jnp.reshape(factors[0], (1,))
    return jnp.concatenate([f.reshape(-1) for f in factors])


def _along(x: Array, factor: Array, axis: int) -> Array:
    """``factor`` applied to axis ``axis`` of ``x`` (a diagonal elementwise)."""
    if factor.ndim < 2:
        return x * jnp.reshape(factor, (-1,) + (1,) * (x.ndim - axis - 1))
    return jnp.moveaxis(jnp.tensordot(factor, x, axes=([1], [axis])), 0, axis)


def _solve_transposed(x: Array, factor: Array, axis: int) -> Array:
    """``factor^-T`` applied to axis ``axis`` of ``x`` (a diagonal: ``x / factor``)."""
    if factor.ndim < 2:
        return x / jnp.reshape(factor, (-1,) + (1,) * (x.ndim - axis - 1))
    moved = jnp.moveaxis(x, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    solved = jax.lax.linalg.triangular_solve(
        factor, flat, left_side=True, lower=False, transpose_a=True
    )
    return jnp.moveaxis(solved.reshape(moved.shape), 0, axis)


def _gram(x: Array, axis: int, triangular: bool) -> Array:
    """``x x^T`` over every axis but ``axis`` (its diagonal for a diagonal factor)."""
    if not triangular:
        others = tuple(i for i in range(x.ndim) if i != axis)
        return jnp.sum(x * x, axis=others)
    moved = jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return moved @ moved.T


def norm_lower_bound(a: Array) -> Array:
    """A cheap lower bound of the spectral norm of a symmetric matrix ``a``.

    With ``s = max |a_ij|`` and the row of ``a / s`` of largest squared norm
    (``x``), ``s |a^T (a x / |a x|)|``: one matrix-vector product more than
    the row's norm, within a factor about sqrt(2) of the norm (Li's
    estimate). Zero for a zero matrix.
    """
    largest = jnp.max(jnp.abs(a))

    def bound(a: Array) -> Array:
        b = a / largest
        squares = b * b
        cols, rows = jnp.sum(squares, axis=0), jnp.sum(squares, axis=1)
        i, j = jnp.argmax(cols), jnp.argmax(rows)

        def by_column() -> Array:
            x = b[:, i] @ b
            return largest * jnp.linalg.norm((x / jnp.linalg.norm(x)) @ b.T)

        def by_row() -> Array:
            x = b @ b[j, :]
            return largest * jnp.linalg.norm(b.T @ (x / jnp.linalg.norm(x)))

        return jax.lax.cond(cols[i] > rows[j], by_column, by_row)

    return jax.lax.cond(largest > 0, bound, lambda _: largest, a)


def _tiny(x: Array) -> Array:
    return x + jnp.finfo(x.dtype).tiny


def _balanced(factors: list[Array]) -> list[Array]:
    """The factors rescaled to equal largest magnitudes, their product unchanged.

    The scales are computed in float32, as in psgd-jax.
    """
    if len(factors) < 2:
        return factors
    norms = jnp.stack([jnp.max(jnp.abs(f)).astype(jnp.float32) for f in factors])
    mean = jnp.prod(norms) ** (1 / len(factors))
    return [f * (mean / n).astype(f.dtype) for f, n in zip(factors, norms, strict=True)]


def _refreshed(
    factors: list[Array],
    g: Array,
    v: Array,
    tri: tuple[bool, ...],
    lr: Scalar,
) -> list[Array]:
    """One step of the fit of ``P = Q^T Q`` to ``P E[h h^T] P = E[v v^T]``."""
    if not g.ndim:  # a scalar: one "diagonal" factor
        (f,) = factors
        a, b = f * g, v / f
        t1, t2 = a * a, b * b
        return [f - lr * (t1 - t2) * f / _tiny(jnp.abs(t1 + t2))]
    a, b = g, v
    for axis, f in enumerate(factors):
        a = _along(a, f, axis)
        b = _solve_transposed(b, f, axis)
    out = []
    for axis, (f, t) in enumerate(zip(factors, tri, strict=True)):
        t1, t2 = _gram(a, axis, t), _gram(b, axis, t)
        if t:
            step = jnp.triu(lr * (t1 - t2)) / _tiny(norm_lower_bound(t1 + t2))
            out.append(f - step @ f)
        else:
            out.append(f - lr * (t1 - t2) * f / _tiny(jnp.max(jnp.abs(t1 + t2))))
    return out


def _preconditioned(factors: list[Array], g: Array) -> Array:
    """``g`` with ``Q_a^T Q_a`` applied to each axis ``a``."""
    if not g.ndim:
        return factors[0] * factors[0] * g
    for axis, f in enumerate(factors):
        g = _along(g, f, axis)
        g = _along(g, f.T if f.ndim == 2 else f, axis)
    return g


def _split_for_probes(state_key: Any, n_leaves: int) -> tuple[Any, Any]:
    """psgd-jax's draws: the balance coin, then one probe key per leaf."""
    rest, _coin = jax.random.split(state_key)
    _, probes = jax.random.split(rest)
    return state_key, jax.random.split(probes, n_leaves)


def step_draws(base: Array, count: Array) -> tuple[Array, Array]:
    """The key of a step's probes and its balance coin's uniform draw.

    As psgd-jax draws them: the key of step ``count`` (from 0) is the second
    half of ``split(fold_in(base, count))``; the coin is uniform from the
    second half of its split, and the probes come from its first half
    (:func:`_split_for_probes`, one key per leaf). The authors' comparison
    with kron-torch hands that package these draws.
    """
    _, key = jax.random.split(jax.random.fold_in(base, count))
    return key, jax.random.uniform(jax.random.split(key)[1])


def _check(hyper: Mapping[str, Any]) -> None:
    if hyper["memory_save_mode"] not in MEMORY_SAVE_MODES:
        raise ValueError(
            "psgd_kron: memory_save_mode must be None, 'smart_one_diag', "
            f"'one_diag' or 'all_diag', got {hyper['memory_save_mode']!r}"
        )
    for name in ("max_size_triangular", "min_ndim_triangular"):
        value = hyper[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"psgd_kron: {name} must be an integer, got {value!r}")


@rule(
    name="psgd_kron_leaf",
    slots={
        "mu": Slot(),
        # (one flat array per leaf; "factors" keeps it out of 8-bit state)
        "factors": Slot(shape=_q_shape, init=_q_init, dtype_arg="precond_dtype"),
    },
    per_leaf={"weight_decay_mask": True, "scanned_layers": False},
    per_leaf_is_leaf={"scanned_layers": is_flag},
    extra_args=("refresh", "balance"),
    static=(
        "max_size_triangular",
        "min_ndim_triangular",
        "memory_save_mode",
        "momentum_into_precond_update",
        "merge_dims",
        "precondition_damped_momentum",
    ),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "weight_decay": ">= 0",
        "preconditioner_lr": ">= 0",
        "preconditioner_init_scale": "> 0",
        "max_size_triangular": ">= 1",
        "min_ndim_triangular": ">= 0",
    },
    seed_arg="seed",
    seed_default=5318008,
    key_split=_split_for_probes,
    check=_check,
)
def psgd_kron_leaf(
    grad: Array,
    mu: Array,
    factors: Array,
    key: Array,
    refresh: Array,
    balance: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 1e-3,
    b1: Scalar = 0.9,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: Any = None,
    preconditioner_lr: Scalar = 0.1,
    preconditioner_init_scale: Scalar = 1.0,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    merge_dims: bool = False,
    precondition_damped_momentum: bool = False,
    scanned_layers: Any = None,
) -> tuple[Array, Array, Array]:
    """PSGD Kron's per-leaf arithmetic, given whether this step refits the factors.

    The build function :func:`psgd_kron` decides at the tree level (one
    decision for all leaves, as the reference) when the factors are refit
    and when they are rebalanced, and sets the key the probes are drawn from.
    """
    del preconditioner_init_scale  # (read by the slot's init)
    shape = tuple(jnp.shape(grad))
    scanned = bool(scanned_layers)
    layer = layer_shape("psgd_kron", shape, scanned)
    if merge_dims:
        layer = merged_shape(layer)
    fitted = (shape[0], *layer) if scanned else layer
    tri = triangular_axes(
        layer, max_size_triangular, min_ndim_triangular, memory_save_mode
    )
    mu = b1 * mu + (1 - b1) * grad
    # Every contraction runs over a layer's whole axes. Under explicit
    # sharding a scanned leaf's layers are moved onto their owners (each
    # device fits and applies the factors of its own layers, which it also
    # stores); any other leaf and its factors are gathered. The results are
    # sharded back like the parameter.
    if scanned:

        def whole(x: Array) -> Array:
            return whole_matrices(x, (0,))

        def each(fn: Callable[..., Any]) -> Callable[..., Any]:
            return jax.vmap(fn)

        qs = each(lambda q: _unpack(q, layer, tri))(stacked_like(factors, grad, (0,)))
    else:
        whole = replicated

        def each(fn: Callable[..., Any]) -> Callable[..., Any]:
            return fn

        qs = _unpack(replicated(factors), layer, tri)
    m = whole(mu / (1 - b1**step)).reshape(fitted)

    def refit(qs: list[Array]) -> tuple[list[Array], Array]:
        qs = jax.lax.cond(balance, each(_balanced), lambda f: f, qs)
        v = whole(random_like(key, mu)).reshape(fitted)
        g = m if momentum_into_precond_update else whole(grad).reshape(fitted)
        damping = jnp.sqrt(jnp.finfo(jnp.float32).eps).astype(g.dtype)
        g = g + damping * jnp.mean(jnp.abs(g)) * v
        fit = each(lambda q, g, v: _refreshed(q, g, v, tri, preconditioner_lr))
        damped = precondition_damped_momentum and momentum_into_precond_update
        return fit(qs, g, v), g if damped else m

    qs, h = jax.lax.cond(refresh, refit, lambda f: (f, m), qs)
    direction = sharded_like(each(_preconditioned)(qs, h).reshape(shape), grad)
    rms = jnp.sqrt(jnp.mean(direction * direction))
    direction = direction / jnp.maximum(1.0, rms / 1.1)
    if weight_decay_mask:
        direction = direction + weight_decay * param
    packed = each(lambda q: _pack(q, not layer))(qs)
    return (
        -learning_rate * direction,
        mu,
        stacked_like(packed, grad, (0,)) if scanned else sharded_like(packed, factors),
    )


DEFAULT_UPDATE_PROBABILITY = psgd_update_probability()
"""psgd-jax's default: every step for 500 steps, then decaying to 0.03."""


class PsgdKronState(NamedTuple):
    """PSGD Kron's state: the rule's fields and the update counter."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: Any
    factors: Any
    rng_key: jax.Array
    update_counter: jax.Array


class PsgdKronRoundingState(NamedTuple):
    """:class:`PsgdKronState` with the key of stochastic rounding."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: Any
    factors: Any
    rng_key: jax.Array
    rounding_key: jax.Array
    update_counter: jax.Array


@composite(
    psgd_kron_leaf,
    static_args=("preconditioner_update_probability",),
)
def psgd_kron(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    weight_decay: Scalar = 0.0,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
    preconditioner_update_probability: Scalar
    | Callable[[Array], Array] = DEFAULT_UPDATE_PROBABILITY,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    preconditioner_lr: Scalar = 0.1,
    preconditioner_init_scale: Scalar = 1.0,
    *,
    scanned_layers: Any | Callable[[optax.Params], Any] | None = None,
    merge_dims: bool = False,
    precondition_damped_momentum: bool = False,
    mu_dtype: Any | None = None,
    precond_dtype: Any | None = None,
    seed: Any = 5318008,
    stochastic_rounding: bool = False,
    rounding_seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""PSGD Kron: SGD preconditioned by a Kronecker product of fitted factors.

    Li's preconditioned SGD with the Kronecker-product preconditioner, in the
    form of Evan Walters' ``psgd-jax`` ``kron`` (the reference it is verified
    against). Each leaf keeps one factor ``Q_a`` per axis: an upper
    triangular matrix, or a diagonal (axes of length 1 or longer than
    ``max_size_triangular``, leaves of fewer than ``min_ndim_triangular``
    axes, and by ``memory_save_mode``). With probability
    ``preconditioner_update_probability`` (taken deterministically: every
    ``1/p``-th step) the factors take one step of the fit of
    ``P = Q^T Q`` to the gradient's statistics, from a probe ``v ~ N(0, I)``.

    Update::

        m   = b1 m + (1 - b1) g;        m_hat = m / (1 - b1**t)
        every 1/p steps, with h = m_hat (or g) + sqrt(eps32) mean|h| v:
          A   = h x_a Q_a;   B = v x_a Q_a^-T          (x_a: along axis a)
          G_a = A_(a) A_(a)^T,  C_a = B_(a) B_(a)^T     (over the other axes)
          Q_a = Q_a - lr_p triu(G_a - C_a) / |G_a + C_a|_lb  Q_a
        d   = m_hat x_a Q_a^T Q_a;   d = d / max(1, rms(d) / 1.1)
        u   = -lr_t (d + wd theta)                      (decay on masked leaves)

    where ``|.|_lb`` is :func:`norm_lower_bound` (a diagonal factor:
    ``Q_a (1 - lr_p (G_a - C_a) / max|G_a + C_a|)``, elementwise), and with
    probability 0.01 per refit the factors are first rescaled to equal
    largest magnitudes. The draws (the probe, the balance coin) come from
    ``fold_in(key(seed), count)`` split as psgd-jax splits it, so the default
    seed draws psgd-jax's numbers.

    Why this is not one rule function: when the factors are refit and
    when they are rebalanced is one decision for the whole tree per step (a
    counter of steps and one coin, as in psgd-jax), and the probes' key is
    derived from the step count; the per-leaf arithmetic is one rule
    (``psgd_kron_leaf``, which handles slots, dtypes, masks and sharding),
    and this function makes those decisions and hands them to it.

    Scanned layers (``scanned_layers``, psgd-jax's option): a marked leaf's
    first axis indexes a stack of layers (a model built with ``lax.scan``),
    and each layer gets its own factors, fitted and applied as psgd-jax
    vmaps them (the probe, the damping's mean and the RMS cap stay over the
    whole leaf). Under explicit sharding each device fits and applies the
    factors of the layers it owns and stores only those
    (:func:`~jaxopt_rules._core.whole_matrices`): a leaf sharded over its
    layers' rows is moved onto the layer axis by one all-to-all each way.
    An unmarked leaf is gathered for its contractions (every device does
    its work). Not offered: psgd-jax's ``lax_map_scanned_layers`` (a memory
    option that gives the same numbers) and its matmul precisions (this
    rule computes at the parameters' precision).

    kron-torch (the same author's PyTorch ``Kron``, the second reference
    it is verified against) differs from psgd-jax in three ways, each an
    option here: it fits the factors of a leaf of three or more axes to it
    as a matrix (``merge_dims=True``), it adds the fit's damping to its
    momentum in place, so that on refit steps it preconditions
    ``m_hat + sqrt(eps32) mean|m_hat| v``, a change of about 3e-4 of each
    entry (``precondition_damped_momentum=True``), and it decays only leaves
    of two or more axes (``weight_decay_mask``); its ``smart_one_diag`` mode
    is a ``memory_save_mode``. Not reproduced: its triangular solves in
    float32 whatever the precision (in float64 runs a difference of 1e-8
    after 100 steps), its schedule called with the step from 0 (here from 1,
    as psgd-jax: pass ``lambda n: schedule(n - 1)``), its factors stored in
    float32 by default (here in the parameter's dtype: ``precond_dtype``),
    and its draws (torch's generator and ``random.Random(42)``; the
    comparison hands it this rule's).

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum, in [0, 1).
        weight_decay: decay rate added to the preconditioned step.
        weight_decay_mask: a pytree of booleans (a prefix of the params) or a
            function of the params returning one; ``None`` decays every leaf.
        preconditioner_update_probability: a probability in (0, 1], or a
            schedule of the step (counted from 1) returning one (default
            :func:`psgd_update_probability`).
        max_size_triangular: longest axis with a triangular factor.
        min_ndim_triangular: fewest axes a leaf needs for triangular factors.
        memory_save_mode: ``None`` (all triangular), ``"one_diag"`` (the
            longest axis diagonal), ``"smart_one_diag"`` (the longest axis
            diagonal where no other is as long) or ``"all_diag"``.
        momentum_into_precond_update: fit the factors to the debiased
            momentum (``True``) or to the raw gradient.
        scanned_layers: a pytree of booleans (a prefix of the params) or a
            function of the params returning one: leaves whose first axis
            indexes layers, each preconditioned on its own (``None``: none).
        merge_dims: fit the factors of a leaf (a layer) of three or more
            axes to it as a matrix (:func:`merged_shape`; kron-torch's
            default).
        precondition_damped_momentum: on the steps that refit the factors,
            precondition the damped momentum the fit was fed, as kron-torch
            does (with ``momentum_into_precond_update``).
        preconditioner_lr: step size of the factors' fit (>= 0).
        preconditioner_init_scale: the preconditioner's initial scale: each
            factor starts as its ``k``-th root times the identity.
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        precond_dtype: storage dtype of the factors (default: the
            parameter's).
        seed: seed of the probes and balance coins (psgd-jax's fixed
            5318008 by default; an integer or a key).
        stochastic_rounding: round slots stored in bfloat16 stochastically.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.psgd_kron(0.1)
        >>> params = {"w": jnp.ones((3, 2))}
        >>> grads = {"w": jnp.ones((3, 2))}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> [tuple(x.shape) for x in jax.tree.leaves(state.factors)]  # 3x3, 2x2
        [(13,)]

    References:
        Li, "Preconditioned Stochastic Gradient Descent", IEEE TNNLS 2018
        (arXiv:1512.04202); Li, "Preconditioner on Matrix Lie Group for
        SGD", ICLR 2019 (arXiv:1809.10232); Walters, ``psgd-jax`` (the
        ``kron`` optimizer) and ``kron-torch`` (``Kron``). Verified against
        ``psgd-jax`` 0.2.9 and ``kron-torch`` 0.3.3.
    """
    leaf = psgd_kron_leaf(
        learning_rate=learning_rate,
        b1=b1,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        preconditioner_lr=preconditioner_lr,
        preconditioner_init_scale=preconditioner_init_scale,
        max_size_triangular=max_size_triangular,
        min_ndim_triangular=min_ndim_triangular,
        memory_save_mode=memory_save_mode,
        momentum_into_precond_update=momentum_into_precond_update,
        scanned_layers=scanned_layers,
        merge_dims=merge_dims,
        precondition_damped_momentum=precondition_damped_momentum,
        mu_dtype=mu_dtype,
        precond_dtype=precond_dtype,
        seed=seed,
        stochastic_rounding=stochastic_rounding,
        rounding_seed=rounding_seed,
    )
    probability = preconditioner_update_probability
    if not callable(probability) and not isinstance(probability, jax.Array):
        if isinstance(probability, bool) or not 0 < probability <= 1:
            raise ValueError(
                "psgd_kron: preconditioner_update_probability must be in (0, 1] "
                f"or a schedule, got {probability!r}"
            )
    base = initial_key(seed)
    state_class: Any = PsgdKronRoundingState if stochastic_rounding else PsgdKronState

    init = init_with_last_field(
        leaf.init, state_class, lambda params: jnp.zeros([], jnp.int32)
    )

    def update(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        del extra_args
        if params is None:
            raise ValueError("psgd_kron: update needs params")
        inner, counter = split_last_field(
            "psgd_kron", state, state_class, leaf.init, params
        )
        p = probability(state.count + 1) if callable(probability) else probability
        counter = counter + 1
        refresh = counter >= 1 / p
        counter = jnp.where(refresh, 0, counter)
        key, coin = step_draws(base, state.count)
        balance = coin < BALANCE_PROBABILITY
        inner = inner._replace(rng_key=key)
        new_updates, new_inner = leaf.update(
            updates, inner, params, refresh=refresh, balance=balance
        )
        fields: Any = new_inner
        return new_updates, state_class(*fields, counter)

    return optax.GradientTransformationExtraArgs(init, update)


def _not_vectors(params: Any) -> Any:
    """A weight-decay mask for any tree: leaves of rank 2 or more."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def _arrays(params: Any) -> Any:
    """A ``scanned_layers`` tree: every leaf with an axis."""
    return jax.tree.map(lambda x: jnp.ndim(x) >= 1, params)


_DECAYING = psgd_update_probability(flat_start=20, decay=0.05)
"""A schedule whose decay starts within the comparison's 100 steps."""


def _decaying_from_zero(n: Any) -> float:
    """:data:`_DECAYING` as kron-torch calls a schedule: with the step from 0."""
    return float(_DECAYING(jnp.asarray(float(n) + 1)))


_KRON_TORCH = {"merge_dims": True, "precondition_damped_momentum": True}
"""The options that give kron-torch's numbers (with the weight-decay mask)."""


SPEC = RuleSpec(
    name="psgd_kron",
    factory=psgd_kron,
    hyperparams={"learning_rate": 1e-2},
    reads_whole_leaves=True,
    authors=AuthorsReference(
        requirement="psgd-jax==0.2.9",
        optimizer="psgd_jax.kron.kron",
        framework="jax",
        # The reference's matmul precisions (TF32 for the factors' fit by
        # default) do not exist on CPU, where the comparison runs; it runs
        # at full precision. Its other arguments are this rule's.
        cases=(
            *(
                (ours, {**ours, "precond_update_precision": None})
                for ours in (
                    {"learning_rate": 1e-2},
                    {
                        "learning_rate": 1e-2,
                        "b1": 0.8,
                        "weight_decay": 0.1,
                        "weight_decay_mask": _not_vectors,
                        "preconditioner_update_probability": 0.5,
                        "preconditioner_lr": 0.2,
                    },
                    {
                        "learning_rate": 1e-2,
                        "memory_save_mode": "one_diag",
                        "momentum_into_precond_update": False,
                        "preconditioner_init_scale": 2.0,
                        "preconditioner_update_probability": _DECAYING,
                    },
                    {"learning_rate": 1e-2, "memory_save_mode": "all_diag", "b1": 0.0},
                    {
                        "learning_rate": 1e-2,
                        "max_size_triangular": 4,
                        "min_ndim_triangular": 3,
                    },
                )
            ),
            # Scanned layers: the cube as 2 matrices (triangular factors),
            # the matrix as 4 vectors (diagonal ones), the vector as 7
            # scalars. psgd-jax takes a tree of booleans; the rule a
            # function of the params (so the case runs on any tree).
            (
                {
                    "learning_rate": 1e-2,
                    "scanned_layers": _arrays,
                    "preconditioner_update_probability": 0.5,
                },
                {
                    "learning_rate": 1e-2,
                    "scanned_layers": {"vec": True, "mat": True, "cube": True},
                    "preconditioner_update_probability": 0.5,
                    "precond_update_precision": None,
                },
            ),
        ),
    ),
    # kron-torch: its default merge_dims and in-place damping are options
    # here (_KRON_TORCH); its decay of matrices only the mask. It solves its
    # triangular systems in float32 whatever the precision: in float64 the
    # runs differ by up to 1.6e-8 (with its solves in float64: 3e-12,
    # tests/test_psgd_kron.py), hence 1e-7.
    more_authors=(
        AuthorsReference(
            requirement="kron-torch==0.3.3",
            optimizer="kron_torch.kron.Kron",
            shares_draws=True,
            dtype_args=("precond_dtype",),
            tolerance={"float64": 1e-7, "float32": 1e-5},
            cases=(
                ({"learning_rate": 1e-2, **_KRON_TORCH}, {"lr": 1e-2}),
                (
                    {
                        "learning_rate": 1e-2,
                        "b1": 0.8,
                        "weight_decay": 0.1,
                        "weight_decay_mask": _not_vectors,
                        "preconditioner_update_probability": 0.5,
                        "preconditioner_lr": 0.2,
                        "preconditioner_init_scale": 2.0,
                        **_KRON_TORCH,
                    },
                    {
                        "lr": 1e-2,
                        "b1": 0.8,
                        "weight_decay": 0.1,
                        "preconditioner_update_probability": 0.5,
                        "precond_lr": 0.2,
                        "precond_init_scale": 2.0,
                    },
                ),
                (
                    {
                        "learning_rate": 1e-2,
                        "memory_save_mode": "smart_one_diag",
                        "momentum_into_precond_update": False,
                        "preconditioner_update_probability": _DECAYING,
                        "precondition_damped_momentum": True,
                    },
                    {
                        "lr": 1e-2,
                        "memory_save_mode": "smart_one_diag",
                        "momentum_into_precond_update": False,
                        "preconditioner_update_probability": _decaying_from_zero,
                        "merge_dims": False,
                    },
                ),
                (
                    {
                        "learning_rate": 1e-2,
                        "memory_save_mode": "one_diag",
                        "b1": 0.0,
                        **_KRON_TORCH,
                    },
                    {"lr": 1e-2, "memory_save_mode": "one_diag", "b1": 0.0},
                ),
                (
                    {
                        "learning_rate": 1e-2,
                        "max_size_triangular": 3,
                        "min_ndim_triangular": 3,
                        "precondition_damped_momentum": True,
                    },
                    {
                        "lr": 1e-2,
                        "max_size_triangular": 3,
                        "min_ndim_triangular": 3,
                        "merge_dims": False,
                    },
                ),
                (
                    {
                        "learning_rate": 1e-2,
                        "memory_save_mode": "all_diag",
                        **_KRON_TORCH,
                    },
                    {"lr": 1e-2, "memory_save_mode": "all_diag"},
                ),
            ),
        ),
    ),
)
