"""GaLore: Adam on gradients projected onto a low-rank subspace, refreshed by SVD."""

import inspect
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib
from optax.contrib import GaLoreDimensionNumbers

from jaxopt_rules._core import Array, Scalar, Slot, replicated, rule
from jaxopt_rules.rules._adam import adam_direction, adam_moments
from jaxopt_rules.rules._matrix_axes import check_dimension_numbers, split_axes
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


_B1, _B2, _EPS = 0.9, 0.999, 1e-8  # optax.scale_by_adam's defaults, GaLore's base


_TWO_D = "2-d"
"""A leaf's dimension numbers when the argument is ``None``: project it with
the default ``GaLoreDimensionNumbers()`` if it has two axes (optax's default)."""


def _is_dims(x: Any) -> bool:
    return x is None or isinstance(x, GaLoreDimensionNumbers)


def _matrix(
    shape: tuple[int, ...], dims: GaLoreDimensionNumbers | str | None
) -> tuple[tuple[int, ...], int, int] | None:
    """How a leaf is seen as a matrix: (axes order, rows, columns), or None.

    ``dims`` is the leaf's own: ``_TWO_D`` (2-d leaves only, the default),
    ``None`` (not projected) or a ``GaLoreDimensionNumbers`` (leaves of two
    or more axes).
    """
    if dims is None or len(shape) < 2:
        return None
    if dims == _TWO_D:
        if len(shape) != 2:
            return None
        dims = GaLoreDimensionNumbers()
    assert isinstance(dims, GaLoreDimensionNumbers)
    batch, rows, cols = split_axes("galore", shape, dims)
    if batch:
        raise ValueError(
            f"galore: weight_dimension_numbers={dims} leaves axes of a leaf of "
            f"shape {shape} unassigned; every axis must be a reduction or an "
            "output axis"
        )
    order = rows + cols
    m = math.prod(shape[a] for a in rows)
    n = math.prod(shape[a] for a in cols)
    return order, m, n


def _projector_shape(
    shape: tuple[int, ...], hyper: Mapping[str, Any]
) -> tuple[int, ...]:
    """``(m, r)`` for a tall matrix, ``(n, r)`` for a wide one, ``(1, 1)`` else.

    optax keeps a ``(0, 0)`` array for a leaf it does not project; orbax
    cannot save zero-size arrays, so the drop-in keeps one zero instead
    (``jr.from_optax`` and ``jr.to_optax`` convert the two).
    """
    matrix = _matrix(shape, hyper["weight_dimension_numbers"])
    if matrix is None:
        return (1, 1)
    _, m, n = matrix
    return (max(m, n), min(hyper["rank"], m, n))


def _moment_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    """The projected gradient's shape: ``(r, n)`` tall, ``(m, r)`` wide."""
    matrix = _matrix(shape, hyper["weight_dimension_numbers"])
    if matrix is None:
        return shape
    _, m, n = matrix
    r = min(hyper["rank"], m, n)
    return (r, n) if m >= n else (m, r)


def _check(hyper: Mapping[str, Any]) -> None:
    if hyper["base_optimizer"] is not None:
        raise ValueError(
            "galore: base_optimizer must be None (Adam, optax's default): the "
            "drop-in keeps Adam's moments of the projected gradients in its own "
            "state; for another base use optax.contrib.galore"
        )
    check_dimension_numbers(
        "galore",
        "weight_dimension_numbers",
        hyper["weight_dimension_numbers"],
        _is_dims,
        "a GaLoreDimensionNumbers, a tree of them (None: a leaf not projected)",
    )
    rank = hyper["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"galore: rank must be an int, got {rank!r}")
    if rank <= 0:
        raise ValueError(f"galore: rank must be positive, got {rank}")


@rule(
    name="galore",
    slots={
        "mu": Slot(shape=_moment_shape),
        "nu": Slot(shape=_moment_shape, square=True),
        "projector": Slot(shape=_projector_shape),
    },
    static=("rank", "update_proj_gap", "base_optimizer"),
    per_leaf={"mask": True, "weight_dimension_numbers": _TWO_D},
    per_leaf_is_leaf={"weight_dimension_numbers": _is_dims},
    constraints={
        "learning_rate": ">= 0",
        "weight_decay": ">= 0",
        "update_proj_gap": ">= 1",
    },
    positional=(
        "learning_rate",
        "rank",
        "update_proj_gap",
        "scale",
        "base_optimizer",
        "weight_decay",
        "mask",
        "weight_dimension_numbers",
    ),
    check=_check,
)
def galore(
    grad: Array,
    mu: Array,
    nu: Array,
    projector: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: Scalar = 1.0,
    base_optimizer: None = None,
    weight_decay: Scalar = 0.0,
    mask: Any = None,
    weight_dimension_numbers: Any = None,
) -> tuple[Array, Array, Array, Array]:
    r"""GaLore: Adam's moments kept for a low-rank projection of each matrix's gradient.

    A drop-in for ``optax.contrib.galore`` with its default base optimizer
    (``scale_by_adam()``): same arguments, defaults and numbers. Each matrix
    ``G`` (``m x n``) is projected onto the ``r = min(rank, m, n)`` leading
    singular vectors of its gradient, recomputed every ``update_proj_gap``
    steps (on the first step, then every ``update_proj_gap``-th); Adam runs on
    the projected gradient, and its direction is projected back. Other leaves
    (vectors, scalars; and leaves of three or more axes unless
    ``weight_dimension_numbers`` says how they are matrices) get plain Adam.
    Leaves of fewer than two axes are never projected, whatever their
    dimension numbers (optax raises for such a leaf given dimension numbers
    in a tree).

    Update::

        (a tall matrix, m >= n; a wide one projects from the right)

        P_t = U[:, :r] of svd(G_t)      (t = 1, 1 + gap, ...; else P_{t-1})
        R_t = P_t^T G_t                 (r x n)
        m_t = b1 m_{t-1} + (1 - b1) R_t,   v_t = b2 v_{t-1} + (1 - b2) R_t**2
        N_t = (m_t / (1 - b1**t)) / (sqrt(v_t / (1 - b2**t)) + eps)
        u_t = -lr_t (scale * P_t N_t + weight_decay * mask * theta_t)

    Leaves that are not projected get ``-lr_t (N_t + weight_decay * mask *
    theta_t)`` with ``N_t`` Adam's direction of the full gradient: optax
    applies ``scale`` to projected leaves only, and so does the drop-in.

    with ``b1, b2, eps = 0.9, 0.999, 1e-8``. As in optax, the SVD runs in
    float32 whatever the parameters' dtype, and the projector is stored in the
    parameter's dtype; the state is ``mu``, ``nu`` (projected shapes) and
    ``projector`` (``(max(m, n), r)``; one zero for leaves not projected,
    where optax keeps a ``(0, 0)`` array).
    The refresh step is decided from the float step count, exact up to 2**24
    steps in float32. The paper's projection follows the same rule; the
    paper's authors also reset nothing at a refresh, as here.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        rank: the projection's rank (capped by each matrix's smaller side).
        update_proj_gap: steps between refreshes of the projectors.
        scale: multiplies the projected-back direction.
        base_optimizer: must be ``None`` (Adam); optax accepts any gradient
            scaling transform here, which the drop-in does not.
        weight_decay: decoupled weight decay, multiplied by ``learning_rate``.
        mask: which leaves decay (a tree of bools or a function of the
            params, as in ``optax.masked``); ``None``: all.
        weight_dimension_numbers: ``None`` (2-d leaves are the matrices);
            one ``optax.contrib.GaLoreDimensionNumbers``, applied to every
            leaf of two or more axes (reduction axes become the rows, output
            axes the columns); a tree of them, a prefix of the params (a
            ``None`` entry: those leaves are not projected); or a function
            of the params returning such a tree.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nu_dtype: storage dtype of the second moment (default: the
            parameter's).
        projector_dtype: storage dtype of the projectors (default: the
            parameter's, as optax).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs the
        params.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> tx = jr.galore(1e-2, rank=2)
        >>> state = tx.init(params)
        >>> state.mu["w"].shape, state.projector["w"].shape
        ((2, 3), (4, 2))
        >>> updates, state = tx.update(params, state, params)
        >>> updates["b"].shape
        (3,)

    References:
        Zhao, Zhang, Chen, Wang, Anandkumar and Tian, "GaLore:
        Memory-Efficient LLM Training by Gradient Low-Rank Projection", ICML
        2024.
        Verified against ``optax.contrib.galore``.
    """
    matrix = _matrix(grad.shape, weight_dimension_numbers)
    if matrix is None:
        low = grad
    else:
        order, m, n = matrix
        # (The SVD and the products take whole matrices: under an explicit
        # mesh they run replicated, as optax's would have to.)
        g2 = replicated(jnp.transpose(grad, order).reshape(m, n))
        projector = replicated(projector)
        r = min(rank, m, n)
        tall = m >= n

        def fresh() -> Array:
            u, _, vh = jnp.linalg.svd(g2.astype(jnp.float32), full_matrices=False)
            basis = u[:, :r] if tall else vh[:r, :].T
            return basis.astype(projector.dtype)

        refresh = jnp.mod(step - 1, update_proj_gap) == 0
        projector = jax.lax.cond(refresh, fresh, lambda: projector)
        low = projector.T @ g2 if tall else g2 @ projector
    mu, nu = adam_moments(low, mu, nu, b1=_B1, b2=_B2)
    direction = adam_direction(
        low, mu, nu, step, b1=_B1, b2=_B2, eps=_EPS, eps_root=0.0, nesterov=False
    )
    if matrix is not None:
        order, m, n = matrix
        full = projector @ direction if m >= n else direction @ projector.T
        transposed = tuple(grad.shape[a] for a in order)
        inverse = tuple(sorted(range(grad.ndim), key=lambda i: order[i]))
        direction = scale * jnp.transpose(full.reshape(transposed), inverse)
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, mu, nu, projector


def optax_galore_with_empty_subtrees(**kwargs: Any) -> optax.GradientTransformation:
    """``optax.contrib.galore`` on trees with ``None`` subtrees.

    optax 0.2.8's GaLore takes a ``None`` in the params for a parameter (its
    dimension-number trees treat ``None`` as a leaf) and fails; the registry's
    comparisons run on a tree with a ``None`` entry (a frozen subtree). This
    reference hands optax ``optax.MaskedNode()`` in its place (an empty
    subtree to optax too) and turns them back into ``None`` on the way out,
    in the updates and the state (and in a weight-decay mask given as a
    tree). Every number comes from optax.
    """

    def hide(tree: Any) -> Any:
        return jax.tree.map(
            lambda x: optax.MaskedNode() if x is None else x,
            tree,
            is_leaf=lambda x: x is None,
        )

    def show(tree: Any) -> Any:
        return jax.tree.map(
            lambda x: None if isinstance(x, optax.MaskedNode) else x,
            tree,
            is_leaf=lambda x: isinstance(x, optax.MaskedNode),
        )

    mask = kwargs.get("mask")
    if mask is not None and not callable(mask):
        kwargs = {**kwargs, "mask": hide(mask)}  # (a mask tree has them too)
    inner = optax.contrib.galore(**kwargs)

    def init(params: Any) -> Any:
        return show(inner.init(hide(params)))

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        new, new_state = inner.update(hide(updates), hide(state), hide(params))
        return show(new), show(new_state)

    return optax.GradientTransformation(init, update)


optax_galore_with_empty_subtrees.__signature__ = inspect.signature(optax.contrib.galore)


def example_dimension_numbers(params: Any) -> Any:
    """Dimension numbers per leaf of the kit's example tree (a reference case).

    The dense matrix as it is, the 4-d convolution kernel as a 6 x 4 matrix,
    the rest not projected. A function of the params, so that its ``None``
    entry follows the tree it is given (``None``, or the ``MaskedNode`` that
    ``optax_galore_with_empty_subtrees`` hands optax).
    """
    return {
        "dense": {"w": GaLoreDimensionNumbers(), "b": None},
        "conv": [GaLoreDimensionNumbers(reduction_axis=(0, 1), output_axis=(2, 3))],
        "scale": None,
        "frozen": params["frozen"],
    }


SPEC = RuleSpec(
    name="galore",
    factory=galore,
    # Projectors refreshed at every step: with a projector kept across steps,
    # the projected gradient of the kit's 3 x 4 matrix nearly cancels by the
    # third step, and jitted and eager runs (optax's too) differ by 4e-6.
    hyperparams={"learning_rate": 0.1, "rank": 1, "update_proj_gap": 1},
    reads_whole_leaves=True,
    reference="optax.contrib.galore",
    reference_factory=optax_galore_with_empty_subtrees,
    reference_cases=(
        {"learning_rate": 1e-2, "rank": 2, "update_proj_gap": 3},
        {
            "learning_rate": 1e-2,
            "rank": 1,
            "update_proj_gap": 1,
            "scale": 0.5,
            "weight_decay": 0.1,
            "mask": WEIGHT_DECAY_MASK,
        },
        {"learning_rate": optax.linear_schedule(1e-2, 1e-3, 50), "rank": 8},
        {
            "learning_rate": 1e-2,
            "rank": 2,
            "update_proj_gap": 2,
            "weight_dimension_numbers": example_dimension_numbers,
        },
    ),
)
