"""Tree comparisons whose failures name the check and the leaf path."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from jaxopt_rules._core import describe_mismatch


class ConformanceError(AssertionError):
    """A rule failed a conformance check; the message names check and leaf."""


def fail(check: str, message: str) -> ConformanceError:
    """Builds the error for ``check``; raise the result."""
    return ConformanceError(f"[{check}] {message}")


def _flat(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(keystr(path) or "<root>", leaf) for path, leaf in leaves], treedef


def assert_same_structure(check: str, what: str, actual: Any, expected: Any) -> None:
    """Fails unless both trees have the same structure (naming the paths)."""
    if jax.tree.structure(actual) != jax.tree.structure(expected):
        detail = describe_mismatch(expected, actual)
        raise fail(check, f"{what}: tree structure changed ({detail})")


def assert_same_shapes_and_dtypes(
    check: str, what: str, actual: Any, expected: Any
) -> None:
    """Fails unless both trees match in structure, leaf shapes and leaf dtypes."""
    assert_same_structure(check, what, actual, expected)
    for (path, a), (_, e) in zip(_flat(actual)[0], _flat(expected)[0], strict=True):
        if jnp.shape(a) != jnp.shape(e):
            raise fail(
                check,
                f"{what} at {path}: shape {jnp.shape(a)}, expected {jnp.shape(e)}",
            )
        if jnp.result_type(a) != jnp.result_type(e):
            raise fail(
                check,
                f"{what} at {path}: dtype {jnp.result_type(a)}, "
                f"expected {jnp.result_type(e)}",
            )


def assert_trees_close(
    check: str,
    what: str,
    actual: Any,
    expected: Any,
    *,
    rtol: float,
    atol: float = 0.0,
) -> None:
    """Fails unless every leaf satisfies ``|a - e| <= atol + rtol * |e|``.

    ``rtol=atol=0`` demands bitwise-equal values (NaNs equal to NaNs).
    """
    assert_same_structure(check, what, actual, expected)
    for (path, a), (_, e) in zip(_flat(actual)[0], _flat(expected)[0], strict=True):
        a_np, e_np = _as_numpy(a), _as_numpy(e)
        if a_np.shape != e_np.shape:
            raise fail(check, f"{what} at {path}: shape {a_np.shape} != {e_np.shape}")
        # Equal values (infinities included) and NaN against NaN agree.
        same = (a_np == e_np) | (np.isnan(a_np) & np.isnan(e_np))
        with np.errstate(invalid="ignore"):
            err = np.where(same, 0.0, np.abs(a_np - e_np))
            bound = atol + rtol * np.abs(e_np)
        bad = ~same & ~(err <= bound)
        if bad.any():
            i = int(np.argmax(np.where(bad, err - bound, -np.inf)))
            raise fail(
                check,
                f"{what} at {path}: {int(bad.sum())} of {bad.size} elements differ; "
                f"worst at flat index {i}: {a_np.ravel()[i]!r} vs expected "
                f"{e_np.ravel()[i]!r} (rtol={rtol}, atol={atol})",
            )


def assert_all_zero(check: str, what: str, tree: Any) -> None:
    """Fails unless every element of every leaf is exactly zero."""
    for path, leaf in _flat(tree)[0]:
        values = np.asarray(jnp.asarray(leaf, jnp.float32))
        if np.any(values != 0):
            raise fail(
                check, f"{what} at {path} is not exactly zero: {values.ravel()[:4]}"
            )


def _as_numpy(x: Any) -> np.ndarray:
    """A leaf in the widest enabled float (or complex, for complex leaves)."""
    if jnp.iscomplexobj(x):
        dtype = jnp.complex128 if _x64() else jnp.complex64
    else:
        dtype = jnp.float64 if _x64() else jnp.float32
    return np.asarray(jnp.asarray(x, dtype))


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))
