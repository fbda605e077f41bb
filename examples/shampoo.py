"""Blocked Shampoo with grafting, written as one per-leaf rule on the rule core.

A matrix preconditioner needs three things an elementwise rule does not: the
whole leaf at once, state of another shape than the parameter (per-block
Kronecker factors), and expensive work done only every few steps (the inverse
roots) without changing the state's types. All three are plain code inside the
per-leaf function below: ``Slot(shape=...)`` gives the factor slots their
``(n_blocks, b, b)`` shape, read from the static hyperparameter ``block_size``
(and ``Slot(init=...)`` starts the inverse roots at identity blocks of that
shape), and ``jax.lax.cond`` refreshes the inverse roots every
``precondition_every`` steps. The core does the rest (NamedTuple state,
schedules, dtypes, masking, constraints, ``inject_hyperparams``, vmap,
sharding), and the conformance kit checks it like any other rule. One thing is
left to the rule: a leaf sharded over explicit mesh axes is gathered before it
is cut into blocks and resharded after (:func:`to_blocks`,
:func:`from_blocks`), because the core hands a rule each leaf as it is sharded
and offers no replicated view of it.

The catalog's ``jr.shampoo`` is the full algorithm (Anil et al.'s grafts,
momentum and schedules of statistics and roots), verified against
``pytorch_optimizer.ScalableShampoo``; this example is the short version, to
read as a template for matrix rules.

Run: ``python examples/shampoo.py`` trains an MLP on scikit-learn's digits
with Shampoo and with Adam and prints both (about 20 s on 2 shared CPU cores).
"""

import functools
import itertools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr


# ---------------------------------------------------------------------------
# Blocking: a leaf as a matrix, the matrix as a stack of blocks.

Layout = tuple[int, int, int, int, int, int]
"""``(m, n, bm, bn, rows, cols)``: the leaf as an ``m x n`` matrix cut into
``rows x cols`` blocks of ``bm x bn`` (the last row and column of blocks padded
with zeros)."""


def matrix_layout(shape: tuple[int, ...], block_size: int) -> Layout | None:
    """How a leaf of ``shape`` is preconditioned; ``None``: by the graft alone.

    A leaf of rank 2 or more is a matrix ``(prod(shape[:-1]), shape[-1])`` (its
    leading dimensions merged: a ``(kh, kw, c_in, c_out)`` kernel becomes
    ``(kh * kw * c_in, c_out)``). A dimension longer than ``block_size`` is cut
    into blocks of ``block_size``, the last one padded with zeros; a shorter
    one is a single block of its own length. Vectors, scalars and empty leaves
    get ``None``.
    """
    if len(shape) < 2 or math.prod(shape) == 0:
        return None
    m, n = math.prod(shape[:-1]), shape[-1]
    bm, bn = min(block_size, m), min(block_size, n)
    return m, n, bm, bn, -(-m // bm), -(-n // bn)


def factor_shape(shape: tuple[int, ...], block_size: int, side: str) -> tuple[int, ...]:
    """Shape of a leaf's left or right factors: ``(n_blocks, b, b)``, or ``(0,)``."""
    layout = matrix_layout(shape, block_size)
    if layout is None:
        return (0,)
    _, _, bm, bn, rows, cols = layout
    size = bm if side == "left" else bn
    return (rows * cols, size, size)


def _explicitly_sharded(x: jax.Array) -> bool:
    """Whether ``x``'s type carries a sharding over explicit mesh axes."""
    mesh = jax.typeof(x).sharding.mesh
    return any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)


def to_blocks(x: jax.Array, layout: Layout) -> jax.Array:
    """A leaf as its stack of ``(rows * cols, bm, bn)`` zero-padded blocks.

    A leaf sharded over explicit mesh axes is gathered first (replicated):
    its blocks need not align with its shards.
    """
    m, n, bm, bn, rows, cols = layout
    if _explicitly_sharded(x):
        x = jax.sharding.reshard(x, jax.sharding.PartitionSpec())
    x = jnp.pad(x.reshape(m, n), ((0, rows * bm - m), (0, cols * bn - n)))
    x = x.reshape(rows, bm, cols, bn).transpose(0, 2, 1, 3)
    return x.reshape(rows * cols, bm, bn)


def from_blocks(blocks: jax.Array, layout: Layout, like: jax.Array) -> jax.Array:
    """The leaf whose blocks are ``blocks``, padding dropped, shaped like ``like``.

    Sharded like ``like`` too, when that is sharded over explicit mesh axes.
    """
    m, n, bm, bn, rows, cols = layout
    x = blocks.reshape(rows, cols, bm, bn).transpose(0, 2, 1, 3)
    x = x.reshape(rows * bm, cols * bn)[:m, :n].reshape(like.shape)
    if _explicitly_sharded(like):
        x = jax.sharding.reshard(x, jax.typeof(like).sharding.spec)
    return x


def identity_blocks(shape: tuple[int, ...], block_size: int, side: str) -> jax.Array:
    """Identity matrices in the shape of a leaf's factor slot."""
    n_blocks, *rest = factor_shape(shape, block_size, side)
    if not rest:
        return jnp.zeros((0,), jnp.float32)
    return jnp.broadcast_to(jnp.eye(rest[0], dtype=jnp.float32), (n_blocks, *rest))


def inverse_root(stats: jax.Array, damping: jr.Scalar, p: int = 4) -> jax.Array:
    """``(A + damping * lambda_max(A) I)^(-1/p)`` of each symmetric block ``A``.

    By eigendecomposition (``jnp.linalg.eigh``, in the dtype of ``stats``):
    eigenvalues below zero (rounding errors of a singular ``A``) are clipped to
    zero before the damping is added, so every root is finite. A block that is
    all zeros (its gradients have been zero) gets the identity.
    """
    eigenvalues, vectors = jnp.linalg.eigh(stats)
    top = eigenvalues[..., -1:]  # eigh sorts in ascending order
    nonzero = top > 0
    shifted = jnp.maximum(eigenvalues, 0) + damping * top
    scale = jnp.where(nonzero, shifted, 1) ** (-1.0 / p)
    root = (vectors * scale[..., None, :]) @ jnp.swapaxes(vectors, -1, -2)
    eye = jnp.eye(stats.shape[-1], dtype=stats.dtype)
    return jnp.where(nonzero[..., None], root, eye)


def require_int(name: str, value: Any) -> int:
    """``value`` if it is a Python int; else a ``TypeError`` naming ``name``.

    The rule's constraints compare numbers (``block_size >= 1``); that a shape
    or a period is a whole number of elements or steps is checked here.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"shampoo: {name} must be an int, got {value!r}")
    return value


def _factor_shape(
    side: str,
) -> Callable[[tuple[int, ...], Mapping[str, Any]], tuple[int, ...]]:
    """``Slot(shape=...)`` of the left or right factors, sized by ``block_size``."""

    def shape(
        param_shape: tuple[int, ...], hyper: Mapping[str, Any]
    ) -> tuple[int, ...]:
        block_size = require_int("block_size", hyper["block_size"])
        return factor_shape(param_shape, block_size, side)

    return shape


def _identity_init(side: str) -> Callable[[Any, Mapping[str, Any]], jax.Array]:
    """``Slot(init=...)`` of the inverse roots: identity blocks."""

    def init(param: Any, hyper: Mapping[str, Any]) -> jax.Array:
        block_size = require_int("block_size", hyper["block_size"])
        return identity_blocks(jnp.shape(param), block_size, side)

    return init


def _block_norms(blocks: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(blocks * blocks, axis=(-2, -1)))


# ---------------------------------------------------------------------------
# The rule


@jr.rule(
    slots={
        "left": jr.Slot(shape=_factor_shape("left")),
        "right": jr.Slot(shape=_factor_shape("right")),
        "left_root": jr.Slot(init=_identity_init("left"), shape=_factor_shape("left")),
        "right_root": jr.Slot(
            init=_identity_init("right"), shape=_factor_shape("right")
        ),
        "nu": jr.Slot(square=True),
        "mu": jr.Slot(when="b1"),
    },
    static=("block_size", "precondition_every"),
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "(0, 1]",
        "damping": "> 0",
        "eps": ">= 0",
        "block_size": ">= 1",
        "precondition_every": ">= 1",
    },
)
def shampoo(
    grad: jax.Array,
    left: jax.Array,
    right: jax.Array,
    left_root: jax.Array,
    right_root: jax.Array,
    nu: jax.Array,
    mu: jax.Array | None,
    step: jax.Array,
    *,
    learning_rate: jr.Scalar,
    b1: jr.Scalar | None = 0.9,
    b2: jr.Scalar = 0.999,
    damping: jr.Scalar = 1e-6,
    eps: jr.Scalar = 1e-8,
    block_size: int = 128,
    precondition_every: int = 10,
) -> tuple[jax.Array | None, ...]:
    """Blocked Shampoo, its step length grafted from Adam's (or AdaGrad's).

    Each leaf of rank >= 2 is viewed as a matrix (leading dimensions
    merged) and cut into blocks of at most ``block_size`` (see
    :func:`matrix_layout`); the last row and column of blocks are padded
    with zeros, which changes no number of the real entries: a zero row
    of ``G`` is a zero row and column of ``L``, so the padded directions
    separate from the others and multiply zero gradients. For each block
    ``G`` at step ``t`` (``w = 1 - b2``, or ``w = 1`` when ``b2 = 1``)::

        L <- b2 L + w G G^T        R <- b2 R + w G^T G
        every precondition_every steps (t = 1, 1 + k, 1 + 2k, ...):
            P <- root(L),  Q <- root(R)
            root(A) = V diag((max(lambda, 0) + damping lambda_max)^(-1/4)) V^T
                      (A = V diag(lambda) V^T; the identity if A = 0)
        D = P G Q                                  Shampoo's direction

    The grafted step has the direction of ``D`` and, block by block, the
    length of Adam's unit step (RMSProp with bias correction; AdaGrad
    when ``b2 = 1``), computed on the whole leaf::

        nu <- b2 nu + w g^2
        A = g / (sqrt(nu / c) + eps)     c = 1 - b2^t (c = 1 when b2 = 1)
        U = (||A_block|| / ||D||) D      (0 where D = 0)

    Vectors and scalars take ``U = A``. With momentum ``b1`` (``None``
    for none)::

        mu <- b1 mu + (1 - b1) U,  update = -learning_rate mu / (1 - b1^t)

    and without it ``update = -learning_rate U``.

    The damping is relative to each block's largest eigenvalue, so the
    preconditioner does not depend on the gradients' scale and the
    smallest eigenvalue it inverts is ``damping * lambda_max``: the
    largest gain in any direction is ``damping^(-1/4)`` times the gain in
    the top one, even for a rank-one or ill-conditioned gradient. The
    roots are computed in the compute dtype (float32, or float64 for
    float64 parameters); keep the factor slots in float32 for bfloat16
    parameters (``left_dtype=jnp.float32`` and so on).

    Cost per leaf ``m x n`` in blocks of ``b``: the factors take
    ``2 (m n / b^2) b^2 = 2 m n`` numbers (about, with padding), and so do
    the roots; every step two batched ``b x b`` products per block;
    every ``precondition_every`` steps two ``b x b`` eigendecompositions
    per block (``O(b^3)`` each).

    Args:
        learning_rate: the step size (a number or a schedule).
        b1: momentum of the grafted step, in ``[0, 1)``; ``None`` keeps no
            momentum slot.
        b2: decay of the factors and of the graft's second moment, in
            ``(0, 1]``; ``1`` sums them (AdaGrad).
        damping: added to each factor's eigenvalues, relative to its
            largest eigenvalue.
        eps: added to the graft's root second moment.
        block_size: the largest side of a preconditioned block, an int >= 1
            (static: it fixes the factor slots' shapes).
        precondition_every: steps between two refreshes of the inverse
            roots, an int >= 1 (static: it is part of the compiled program).

    Returns:
        The update and the new slots.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = shampoo(learning_rate=0.1, block_size=2)
        >>> params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
        >>> state = tx.init(params)
        >>> state.left["w"].shape  # 2 x 2 blocks, each factor 2 x 2
        (4, 2, 2)
        >>> updates, state = tx.update(params, state)
        >>> updates["w"].shape
        (3, 4)

    References:
        V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned Stochastic
        Tensor Optimization", ICML 2018.
        R. Anil, V. Gupta, T. Koren, K. Regan, Y. Singer, "Scalable Second
        Order Optimization for Deep Learning", arXiv:2002.09018, 2020
        (blocking, grafting, refresh every k steps, damping).
    """
    require_int("precondition_every", precondition_every)
    weight = jnp.where(b2 < 1, 1 - b2, jnp.ones_like(b2))
    correction = jnp.where(b2 < 1, 1 - b2**step, jnp.ones_like(b2))
    nu = b2 * nu + weight * grad * grad
    graft = grad / (jnp.sqrt(nu / correction) + eps)

    layout = matrix_layout(grad.shape, block_size)
    if layout is None:
        direction = graft
    else:
        g = to_blocks(grad, layout)
        g_t = jnp.swapaxes(g, -1, -2)
        left = b2 * left + weight * (g @ g_t)
        right = b2 * right + weight * (g_t @ g)
        left_root, right_root = jax.lax.cond(
            jnp.mod(step - 1, precondition_every) == 0,
            lambda: (inverse_root(left, damping), inverse_root(right, damping)),
            lambda: (left_root, right_root),
        )
        d = left_root @ g @ right_root
        d_norm = _block_norms(d)
        length = _block_norms(to_blocks(graft, layout))
        scale = jnp.where(d_norm > 0, length / jnp.where(d_norm > 0, d_norm, 1), 0)
        direction = from_blocks(d * scale[:, None, None], layout, grad)

    if mu is not None:
        assert b1 is not None  # the slot exists only with momentum
        mu = b1 * mu + (1 - b1) * direction
        direction = mu / (1 - b1**step)
    return -learning_rate * direction, left, right, left_root, right_root, nu, mu


# Hyperparameters the conformance kit checks the rule with (blocks of 2, so
# that the kit's 3 x 4 and 4-d leaves split into several ragged blocks).
TEST_HYPERPARAMS: dict[str, Any] = {
    "learning_rate": 1e-2,
    "block_size": 2,
    "damping": 1e-4,
    "precondition_every": 3,
}


# ---------------------------------------------------------------------------
# Demo: an MLP on scikit-learn's digits, Shampoo against Adam.

Params = dict[str, dict[str, jax.Array]]


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> Params:
    """He-initialised dense layers ``layer_0 ... layer_n``."""
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        key, sub = jax.random.split(key)
        params[f"layer_{i}"] = {
            "w": jnp.sqrt(2.0 / n_in) * jax.random.normal(sub, (n_in, n_out)),
            "b": jnp.zeros((n_out,)),
        }
    return params


def forward(params: Params, x: jax.Array) -> jax.Array:
    """Logits of the MLP (ReLU hidden layers)."""
    *hidden, last = params.values()
    for layer in hidden:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ last["w"] + last["b"]


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean()


def train(
    tx: optax.GradientTransformation,
    data: tuple[np.ndarray, ...],
    *,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Trains the MLP with ``tx``; returns (train loss, test loss, test accuracy)."""
    x_train, x_test, y_train, y_test = data
    params = jax.jit(init_mlp, static_argnums=1)(
        jax.random.key(seed), (64, 128, 64, 10)
    )
    state = jax.jit(tx.init)(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_epoch(
        params: Params, state: Any, xs: jax.Array, ys: jax.Array
    ) -> tuple[Params, Any, jax.Array]:
        def step(carry: tuple[Params, Any], batch: Any) -> tuple[Any, jax.Array]:
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(step, (params, state), (xs, ys))
        return params, state, jnp.mean(losses)

    rng = np.random.default_rng(seed)
    n_batches = len(x_train) // batch_size
    train_loss = jnp.zeros(())
    for _ in range(epochs):
        order = rng.permutation(len(x_train))[: n_batches * batch_size]
        xs = x_train[order].reshape(n_batches, batch_size, -1)
        ys = y_train[order].reshape(n_batches, batch_size)
        params, state, train_loss = train_epoch(params, state, xs, ys)

    @jax.jit
    def evaluate(params: Params, x: jax.Array, y: jax.Array) -> tuple[Any, Any]:
        accuracy = jnp.mean(jnp.argmax(forward(params, x), axis=-1) == y)
        return loss_fn(params, x, y), accuracy

    test_loss, accuracy = evaluate(params, x_test, y_test)
    return float(train_loss), float(test_loss), float(accuracy)


def load_data(seed: int = 0) -> tuple[Any, ...]:
    """scikit-learn's 8x8 digits, scaled to [0, 1], split 75/25 (x/y train/test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = (np.asarray(images) / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    return x_train, x_test, y_train, y_test


def main(epochs: int = 10) -> dict[str, tuple[float, float, float]]:
    """Trains with Shampoo and with Adam; prints and returns their results."""
    data = load_data()
    optimizers = {
        "shampoo": shampoo(learning_rate=1e-3, block_size=32, precondition_every=10),
        "adam": jr.adam(learning_rate=1e-3),
    }
    results = {}
    for name, tx in optimizers.items():
        start = time.perf_counter()
        results[name] = train(tx, data, epochs=epochs)
        train_loss, test_loss, accuracy = results[name]
        print(
            f"{name:8s} train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {accuracy:.3f}  ({time.perf_counter() - start:.1f} s)"
        )
    return results


if __name__ == "__main__":
    main()
