"""Adam-mini: one second moment per block of parameters instead of per parameter."""

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


AUTO = "auto"
"""The default partition: per output neuron (the last axis) for leaves of rank
2 or more (a ``(in, out)`` kernel), Adam's per-element moments for the rest."""


def _kind(shape: tuple[int, ...], blocks: Any) -> Any:
    """A leaf's partition: "adam", "rows", "columns" or a number of chunks."""
    if blocks == AUTO:
        return "columns" if len(shape) >= 2 else "adam"
    if isinstance(blocks, bool) or not (
        blocks in ("adam", "rows", "columns") or isinstance(blocks, int)
    ):
        raise ValueError(
            f"adam_mini: blocks must be 'auto', 'adam', 'rows', 'columns' or a "
            f"number of equal chunks, got {blocks!r}"
        )
    if blocks in ("rows", "columns") and not shape:
        raise ValueError(f"adam_mini: a scalar leaf has no {blocks}")
    size = math.prod(shape)
    if isinstance(blocks, int) and (blocks < 1 or size % blocks):
        raise ValueError(
            f"adam_mini: {blocks} chunks do not divide a leaf of shape {shape}"
        )
    return blocks


def _nu_shape(shape: tuple[int, ...], hyper: Mapping[str, Any]) -> tuple[int, ...]:
    kind = _kind(shape, hyper["blocks"])
    if kind == "adam":
        return shape
    if kind == "rows":
        return (shape[0],)
    if kind == "columns":
        return (shape[-1],)
    return (kind,)


def _block_means(x: Array, kind: Any) -> Array:
    """The mean of ``x`` over each block (the nu slot's shape)."""
    if kind == "rows":
        return jnp.mean(x.reshape(x.shape[0], -1), axis=1)
    if kind == "columns":
        return jnp.mean(x.reshape(-1, x.shape[-1]), axis=0)
    return jnp.mean(x.reshape(kind, -1), axis=1)


def _spread(v: Array, shape: tuple[int, ...], kind: Any) -> Array:
    """A per-block value broadcast over the leaf's elements."""
    if kind == "rows":
        return v.reshape((shape[0],) + (1,) * (len(shape) - 1))
    if kind == "columns":
        return v
    return jnp.repeat(v, math.prod(shape) // kind).reshape(shape)


@rule(
    name="adam_mini",
    slots={"nu": Slot(shape=_nu_shape, square=True)},
    per_leaf={"blocks": AUTO, "weight_decay_mask": True},
    # The slot's shape reads each leaf's own partition.
    per_leaf_is_leaf={"blocks": lambda x: isinstance(x, (str, int))},
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
)
def adam_mini(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    blocks: Any = AUTO,
    weight_decay_mask: Any = True,
) -> tuple[Array, Array, Array]:
    r"""Adam-mini: AdamW with one second moment per block of parameters.

    The first moment is Adam's; the second is the running mean of ``g**2``
    over a block (an output neuron, a head, a whole leaf), one number per
    block, which cuts the state of a matrix almost in half. Which blocks: per
    leaf (a tree matching the params, or a callable of them, as optax's
    masks), one of

    - ``"adam"``: every element its own block (Adam; the authors' choice for
      biases);
    - ``"rows"``: one block per index of the first axis (an output neuron of
      a PyTorch ``(out, in)`` weight, a token of an ``(vocab, dim)``
      embedding);
    - ``"columns"``: one per index of the last axis (an output neuron of a
      JAX ``(in, out)`` kernel);
    - an integer ``k``: the leaf flattened (row-major) and cut into ``k``
      equal chunks (``k = 1``: the whole leaf, the authors' default for
      layers they do not recognise; ``numel / (dim**2 / n_heads)``: their
      per-head split of a query or key weight);
    - ``"auto"`` (default): ``"columns"`` for leaves of rank 2 or more,
      ``"adam"`` for vectors and scalars.

    The authors' code picks the blocks from parameter names (embeddings,
    queries and keys, values, MLPs); here they are given. Decay is
    decoupled and applied where ``weight_decay_mask`` holds (the authors
    exempt norms and biases by name).

    ``B(i)`` is the block of element ``i``.

    Update::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t[B] = b2 v_{t-1}[B] + (1 - b2) mean_{i in B} g_t[i]**2
        u_t = -lr_t (m_t / (1 - b1**t)) / (sqrt(v_t[B(i)] / (1 - b2**t)) + eps)
              - lr_t wd theta_{t-1}

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the block second moments, in [0, 1).
        eps: added to the bias-corrected root of the second moment.
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        blocks: the partition of each leaf (see above): a value for every
            leaf, a tree of them matching the params, or a callable of the
            params returning one.
        weight_decay_mask: where decay applies (a bool, a tree of bools or a
            callable of the params).
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        nu_dtype: storage dtype of ``v`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
        ValueError: at ``init``, a partition that does not fit a leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import adam_mini
        >>> params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
        >>> tx = adam_mini(learning_rate=0.1)
        >>> state = tx.init(params)
        >>> state.nu["w"].shape, state.nu["b"].shape  # per output neuron; Adam
        ((4,), (4,))
        >>> grads = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
        >>> updates, state = tx.update(grads, state, params)
        >>> updates["w"][0]  # Adam's first step: lr * sign(g) where g is uniform
        Array([-0.1, -0.1, -0.1, -0.1], dtype=float32)

    References:
        Zhang, Chen, Li, Ding, Chen, Kingma, Ge, Luo and Sun, "Adam-mini: Use
        Fewer Learning Rates To Gain More", ICLR 2025 (arXiv:2406.16793).
        Verified against the authors' ``adam-mini`` 1.1.1.
    """
    shape = tuple(grad.shape)
    kind = _kind(shape, blocks)
    mu = mu + (1 - b1) * (grad - mu)
    if kind == "adam":
        nu = b2 * nu + (1 - b2) * (grad * grad)
        v = nu
    else:
        nu = b2 * nu + (1 - b2) * _block_means(grad * grad, kind)
        v = _spread(nu, shape, kind)
    h = jnp.sqrt(v) / jnp.sqrt(1 - b2**step) + eps
    update = -learning_rate * (mu / (1 - b1**step)) / h
    if weight_decay_mask:
        update = update - learning_rate * weight_decay * param
    return update, mu, nu


def _blocks_by_rank(params: Any) -> Any:
    """The test cases' partition: vectors Adam, matrices per row, the rest in chunks.

    Leaves of rank 3 or more are cut in three chunks where their size allows
    (else one).
    """

    def one(p: Any) -> Any:
        if p is None or jnp.ndim(p) < 2:
            return "adam"
        if jnp.ndim(p) == 2:
            return "rows"
        return 3 if math.prod(jnp.shape(p)) % 3 == 0 else 1

    return jax.tree.map(one, params)


def _decay_matrices(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


SPEC = RuleSpec(
    name="adam_mini",
    factory=adam_mini,
    hyperparams={"learning_rate": 1e-2},
    reads_whole_leaves=True,
    authors=AuthorsReference(
        requirement="adam-mini==1.1.1",
        optimizer="adam_mini.Adam_mini",
        cases=(
            # Names the authors' code does not recognise: one block per leaf.
            ({"learning_rate": 1e-2, "blocks": 1}, {"lr": 1e-2, "verbose": False}),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.8,
                    "b2": 0.99,
                    "eps": 1e-6,
                    "weight_decay": 0.1,
                    "blocks": _blocks_by_rank,
                    "weight_decay_mask": _decay_matrices,
                },
                {
                    "lr": 1e-2,
                    "betas": (0.8, 0.99),
                    "eps": 1e-6,
                    "weight_decay": 0.1,
                    # A bias (Adam, no decay), an MLP weight (per row) and a
                    # query weight of dim 4 with 2 heads (chunks of 4*4/2).
                    "named_parameters": {
                        "vec": "ln.bias",
                        "mat": "mlp.weight",
                        "cube": "q_proj.weight",
                    },
                    "dim": 4,
                    "n_heads": 2,
                    "verbose": False,
                },
            ),
        ),
    ),
)
