"""Small deterministic problems the conformance checks run rules on.

Every problem takes ``matrices_only`` explicitly: for rules defined on
matrices only (Muon) the example tree keeps its structure and names with every
leaf a matrix, and the parabola and Rosenbrock problems run on a column
vector. Nothing here depends on global state.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def example_params(
    dtype: Any = jnp.float32, seed: int = 0, *, matrices_only: bool = False
) -> dict[str, Any]:
    """A small tree with the shapes optimizers meet: 2-d, 1-d, 4-d, scalar, None.

    The ``None`` entry is an empty subtree, as frozen entries often are.

    Args:
        dtype: the leaves' dtype.
        seed: seeds the normal draws of the leaves.
        matrices_only: every leaf a matrix (wide, tall and square) instead.

    Returns:
        ``{"dense": {"w", "b"}, "conv": [leaf], "scale": leaf, "frozen": None}``.

    Example:
        >>> from jaxopt_rules.testing import example_params
        >>> example_params()["conv"][0].shape
        (2, 3, 2, 2)
        >>> example_params(matrices_only=True)["dense"]["b"].shape
        (1, 4)
    """
    rng = np.random.default_rng(seed)

    def leaf(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype=dtype)

    if matrices_only:
        return {
            "dense": {"w": leaf(3, 4), "b": leaf(1, 4)},
            "conv": [leaf(6, 2)],
            "scale": leaf(2, 2),
            "frozen": None,
        }
    return {
        "dense": {"w": leaf(3, 4), "b": leaf(4)},
        "conv": [leaf(2, 3, 2, 2)],
        "scale": leaf(),
        "frozen": None,
    }


def _real_parts(p: Any) -> Any:
    """``p``, or its real and imaginary parts side by side for a complex leaf."""
    if jnp.iscomplexobj(p):
        return jnp.stack([jnp.real(p), jnp.imag(p)])
    return p


def example_loss(params: Any) -> jax.Array:
    """A smooth, non-quadratic, separable loss over every leaf.

    A complex leaf enters through its real and imaginary parts, each as a
    real leaf would (a real loss of complex parameters).
    """
    leaves = [_real_parts(p) for p in jax.tree.leaves(params)]
    terms = [
        jnp.sum(0.5 * (p.astype(jnp.float32) - 0.3) ** 2 + 0.1 * jnp.sin(3.0 * p))
        for p in leaves
    ]
    return sum(terms, jnp.zeros((), jnp.float32))


def example_grads(params: Any) -> Any:
    """The gradient of :func:`example_loss`, in the parameters' dtypes."""
    return jax.grad(example_loss)(params)


Problem = tuple[jax.Array, jax.Array, Callable[[jax.Array], jax.Array]]
"""(start, solution, objective) of a minimisation problem."""


def _as_column(problem: Problem, matrices_only: bool) -> Problem:
    """The problem on an ``(n, 1)`` matrix when ``matrices_only``."""
    if not matrices_only:
        return problem
    start, solution, objective = problem
    return start[:, None], solution[:, None], lambda x: objective(x[:, 0])


def parabola(*, matrices_only: bool = False) -> Problem:
    """``sum((x - x*)**2)`` from (-1, 10, 1) to x* = (1, -1, 1).

    With ``matrices_only`` the same problem on a ``(3, 1)`` column.
    """
    target = jnp.array([1.0, -1.0, 1.0])
    return _as_column(
        (jnp.array([-1.0, 10.0, 1.0]), target, lambda x: jnp.sum((x - target) ** 2)),
        matrices_only,
    )


def rosenbrock(*, matrices_only: bool = False) -> Problem:
    """Rosenbrock's valley ``(1 - x)**2 + 100 (y - x**2)**2`` from (0, 0) to (1, 1).

    With ``matrices_only`` the same problem on a ``(2, 1)`` column.
    """
    return _as_column(
        (
            jnp.array([0.0, 0.0]),
            jnp.array([1.0, 1.0]),
            lambda x: (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2,
        ),
        matrices_only,
    )
