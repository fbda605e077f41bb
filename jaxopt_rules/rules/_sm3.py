"""SM3: AdaGrad-like scaling from one accumulator per index of each axis."""

import functools
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, replicated, rule
from jaxopt_rules.rules._spec import RuleSpec


EPS = 1e-8
"""Added to the accumulated squares under the inverse square root (optax's)."""


def accumulator_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a leaf's ``mu``: its per-axis accumulators end to end.

    An ``m x n`` matrix keeps ``m + n`` numbers (its rows' accumulators, then
    its columns'); a vector keeps one per element, a scalar one.

    Example:
        >>> accumulator_shape((2, 3, 4)), accumulator_shape((5,)), accumulator_shape(())
        ((9,), (5,), ())
    """
    return (sum(shape),) if shape else ()


def _per_axis(mu: Array, shape: tuple[int, ...]) -> list[Array]:
    """``mu`` cut into one accumulator per axis, each broadcastable to ``shape``."""
    ends = [sum(shape[: i + 1]) for i in range(len(shape))]
    pieces = jnp.split(mu, ends[:-1])
    return [
        piece.reshape((1,) * i + (size,) + (1,) * (len(shape) - i - 1))
        for i, (piece, size) in enumerate(zip(pieces, shape, strict=True))
    ]


def _axis_maxima(accum: Array) -> Array:
    """The largest entry of ``accum`` at each index of each axis, end to end.

    Each axis's maxima come sharded like that axis of the parameter; joined
    into one vector (``m + n`` numbers for a matrix) they must share one
    layout, so they are replicated, which costs little next to the matrix.
    The maxima start from 0 (the accumulated squares are never negative), so
    an index of an axis whose other axes are empty, as in a ``(3, 0)`` leaf,
    has maximum 0 instead of failing the reduction.
    """
    rank = accum.ndim
    return jnp.concatenate(
        [
            replicated(
                jnp.max(
                    accum, axis=tuple(j for j in range(rank) if j != i), initial=0.0
                )
            )
            for i in range(rank)
        ]
    )


@rule(
    name="sm3",
    slots={"mu": Slot(square=True, shape=accumulator_shape)},
    constraints={"learning_rate": ">= 0", "momentum": "[0, 1]"},
    positional=("learning_rate", "momentum"),
)
def sm3(
    grad: Array,
    mu: Array,
    nu: Array,
    *,
    learning_rate: Scalar,
    momentum: Scalar = 0.9,
) -> tuple[Array, Array, Array]:
    r"""SM3: AdaGrad with a sublinear-memory cover of the accumulators.

    The numbers of ``optax.sm3`` (same arguments and defaults), plus
    ``mu_dtype`` and ``nu_dtype``. An ``m x n`` matrix keeps one accumulator
    per row and one per column (``m + n`` numbers instead of AdaGrad's
    ``m n``), a leaf of any rank one per index of each axis; vectors and
    scalars keep one per element, which is AdaGrad exactly.

    The method is SM3-II; ``mu_a`` are the accumulators of axis ``a``.

    Update::

        A_t[i] = min_a mu_a[i_a] + g_t[i]**2        (vectors: mu[i] + g_t[i]**2)
        mu_a[k] <- max over i with i_a = k of A_t[i]
        x_t = g_t / sqrt(A_t + 1e-8)   (0 where A_t = 0)
        nu_t = momentum * nu_{t-1} + (1 - momentum) * x_t
        u_t = -lr_t * nu_t

    The state differs from ``optax.sm3``'s in layout, not in value: optax
    keeps each leaf's accumulators as a list of one vector per axis, this rule
    keeps them end to end in one vector (``mu[:m]`` the rows',
    ``mu[m:]`` the columns'); ``jr.from_optax`` and ``jr.to_optax`` convert
    between the two. optax 0.2.8 fails on scalar leaves (its accumulator list
    is empty); here a scalar keeps one accumulator. Under an explicit mesh,
    each leaf's accumulators are replicated (``m + n`` numbers for an
    ``m x n`` matrix): the rows' and the columns' come sharded along
    different mesh axes and are joined into one vector. As in
    optax, the cover is the set of slices along each axis, ``1e-8`` is added
    under the square root, and the momentum is an exponential average of the
    scaled gradients (the paper adds heavy-ball momentum outside the method).

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        momentum: decay of the average of the scaled gradients, in [0, 1].
        mu_dtype: storage dtype of the accumulators (default: the parameter's).
        nu_dtype: storage dtype of the momentum (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules.rules._sm3 import sm3
        >>> tx = sm3(0.1, momentum=0.0)
        >>> params = {"w": jnp.zeros((2, 3))}
        >>> grads = {"w": jnp.array([[1.0, 2.0, 2.0], [0.0, 0.0, 4.0]])}
        >>> updates, state = tx.update(grads, tx.init(params))
        >>> state.mu["w"]  # the rows' largest g**2, then the columns'
        Array([ 4., 16.,  1.,  4., 16.], dtype=float32)
        >>> updates["w"].round(6) + 0.0
        Array([[-0.1, -0.1, -0.1],
               [ 0. ,  0. , -0.1]], dtype=float32)

    References:
        Anil, Gupta, Koren and Singer, "Memory-Efficient Adaptive
        Optimization", NeurIPS 2019. Verified against ``optax.sm3``, with
        scalar leaves viewed as 1-element vectors
        (:func:`optax_sm3_on_vectors`).
    """
    if grad.ndim < 2:
        accum = grad**2 + mu
        mu = accum
    else:
        cover = functools.reduce(jnp.minimum, _per_axis(mu, grad.shape))
        accum = grad**2 + cover
        mu = _axis_maxima(accum)
    scaled = grad * jnp.where(accum > 0, jax.lax.rsqrt(accum + EPS), 0.0)
    nu = (1 - momentum) * scaled + momentum * nu
    return -learning_rate * nu, mu, nu


def optax_sm3_on_vectors(
    learning_rate: Scalar, momentum: Scalar = 0.9
) -> optax.GradientTransformation:
    """``optax.sm3`` with each scalar leaf viewed as a 1-element vector.

    optax 0.2.8's SM3 cannot update a scalar leaf (it keeps no accumulator
    for it and fails); the registry's comparisons run on a tree with one, so
    this reference reshapes scalars to shape ``(1,)`` on the way in and back
    on the way out, the momentum ``nu`` included. Every number comes from
    ``optax.sm3``, and the state is optax's (a list of per-axis accumulators
    per leaf; a scalar's list holds one vector of one element).
    """
    inner = optax.sm3(learning_rate, momentum)

    def lift(tree: Any) -> Any:
        return jax.tree.map(
            lambda x: jnp.reshape(x, (1,)) if jnp.ndim(x) == 0 else x, tree
        )

    def like(tree: Any, shapes: Any) -> Any:
        return jax.tree.map(lambda x, s: jnp.reshape(x, jnp.shape(s)), tree, shapes)

    def init(params: Any) -> Any:
        state: Any = inner.init(lift(params))  # (ScaleBySM3State, EmptyState)
        moments, *rest = state
        return (moments._replace(nu=like(moments.nu, params)), *rest)

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        moments, *rest = state
        lifted = (moments._replace(nu=lift(moments.nu)), *rest)
        lifted_params = None if params is None else lift(params)
        new, new_state = inner.update(lift(updates), lifted, lifted_params)
        moments, *rest = cast(Any, new_state)
        state = (moments._replace(nu=like(moments.nu, updates)), *rest)
        return like(new, updates), state

    return optax.GradientTransformation(init, update)


SPEC = RuleSpec(
    name="sm3",
    factory=sm3,
    hyperparams={"learning_rate": 1.0},
    reads_whole_leaves=True,
    reference="optax.sm3 (scalar leaves as 1-element vectors)",
    reference_factory=optax_sm3_on_vectors,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "momentum": 0.5},
        {"learning_rate": 1e-2, "momentum": 0.0},
    ),
)
