"""Small deterministic problems the conformance checks run rules on."""

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


_matrices_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jaxopt_rules_testing_matrices_only", default=False
)


@contextlib.contextmanager
def matrices_only(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the problems below use 2-d leaves only.

    For rules defined on matrices only (Muon): the example tree keeps its
    structure and names with every leaf a matrix, and the parabola and
    Rosenbrock problems run on a column vector.
    """
    token = _matrices_only.set(enabled)
    try:
        yield
    finally:
        _matrices_only.reset(token)


def matrices_only_active() -> bool:
    """Whether :func:`matrices_only` is on."""
    return _matrices_only.get()


def example_params(dtype: Any = jnp.float32, seed: int = 0) -> dict[str, Any]:
    """A small tree with the shapes optimizers meet: 2-d, 1-d, 4-d, scalar, None.

    The ``None`` entry is an empty subtree, as frozen entries often are. Under
    :func:`matrices_only` every leaf is a matrix (wide, tall and square).
    """
    rng = np.random.default_rng(seed)

    def leaf(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype=dtype)

    if _matrices_only.get():
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


def example_loss(params: Any) -> jax.Array:
    """A smooth, non-quadratic, separable loss over every leaf."""
    leaves = jax.tree.leaves(params)
    terms = [
        jnp.sum(0.5 * (p.astype(jnp.float32) - 0.3) ** 2 + 0.1 * jnp.sin(3.0 * p))
        for p in leaves
    ]
    return sum(terms, jnp.zeros((), jnp.float32))


def example_grads(params: Any) -> Any:
    """The gradient of :func:`example_loss`, in the parameters' dtypes."""
    return jax.grad(example_loss)(params)


Problem = tuple[jax.Array, jax.Array, Callable[[jax.Array], jax.Array]]


def _as_column(problem: Problem) -> Problem:
    """The problem on an ``(n, 1)`` matrix when :func:`matrices_only` is on."""
    if not _matrices_only.get():
        return problem
    start, solution, objective = problem
    return start[:, None], solution[:, None], lambda x: objective(x[:, 0])


def parabola() -> Problem:
    """``sum((x - x*)**2)`` from (-1, 10, 1) to x* = (1, -1, 1)."""
    target = jnp.array([1.0, -1.0, 1.0])
    return _as_column(
        (jnp.array([-1.0, 10.0, 1.0]), target, lambda x: jnp.sum((x - target) ** 2))
    )


def rosenbrock() -> Problem:
    """Rosenbrock's valley ``(1 - x)**2 + 100 (y - x**2)**2`` from (0, 0) to (1, 1)."""
    return _as_column(
        (
            jnp.array([0.0, 0.0]),
            jnp.array([1.0, 1.0]),
            lambda x: (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2,
        )
    )
