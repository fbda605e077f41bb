"""What the core does with one leaf: its kind, its dtypes, its slot shapes.

A leaf is *real* or *complex* (a floating leaf the rule runs on) or *inert*
(integer, boolean and ``float0`` leaves, left untouched as optax does). The
compute dtype is ``promote_types(dtype, float32)``; a slot's storage dtype is
its dtype argument's, else the parameter's (see :func:`storage_dtype`).
"""

import enum
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_rules._core._definition import Slot
from jaxopt_rules._core._tree import leaf_path


class Kind(enum.Enum):
    """How the core treats a leaf."""

    INERT = "inert"
    REAL = "real"
    COMPLEX = "complex"


_COMPLEX_OF = {
    np.dtype(np.float32): np.dtype(np.complex64),
    np.dtype(np.float64): np.dtype(np.complex128),
}


def as_leaf(leaf: Any) -> Any:
    """Python numbers as arrays (frameworks put them in parameter trees)."""
    if isinstance(leaf, bool | int | float | complex):
        return jnp.asarray(leaf)
    return leaf


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a leaf's arithmetic runs in: at least float32."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


def real_dtype(dtype: np.dtype) -> np.dtype:
    """The real dtype of the same precision (``float32`` for ``complex64``)."""
    return np.dtype(jnp.finfo(dtype).dtype)


def lowest_float(dtypes: Iterable[Any]) -> np.dtype:
    """The lowest-precision real dtype of ``dtypes`` (float32 if there are none).

    Fewer bits first, then fewer mantissa bits (bfloat16 below float16);
    complex dtypes count as their real parts.
    """
    reals = [real_dtype(np.dtype(d)) for d in dtypes]
    if not reals:
        return np.dtype(np.float32)
    return min(reals, key=lambda d: (jnp.finfo(d).bits, jnp.finfo(d).nmant))


def cast_value(value: Any, dtype: np.dtype) -> Any:
    """Puts a floating hyperparameter value in the compute dtype.

    Python floats are converted too, on purpose: the rule then computes with
    the same rounded value whether a hyperparameter is a Python float baked
    into the program or an array from ``optax.inject_hyperparams`` (or a
    vmapped sweep), so both give bitwise-identical trajectories. (optax keeps
    Python floats in double precision for expressions such as ``1 - b2``, so
    its injected and plain trajectories drift apart: optax issues #583, #1532.)
    """
    if isinstance(value, float) or (
        isinstance(value, jax.Array | np.ndarray | np.generic)
        and jnp.issubdtype(value.dtype, jnp.floating)
    ):
        return jnp.asarray(value, dtype=dtype)
    return value


def leaf_kind(
    rule: str, complex_ok: bool, tree: Any, index: int, leaf: Any, what: str
) -> Kind:
    """How the core treats a leaf: a real or complex float, or inert.

    Integer, boolean and ``float0`` leaves (step counters, integer buffers and
    their gradients) are *inert*, as in optax: they get slots of zeros of
    their own dtype, and a zero update. Other leaves are refused by name.
    """
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        raise TypeError(
            f"{rule}: {what} at {leaf_path(tree, index)} is a "
            f"{type(leaf).__name__}, not an array"
        )
    dtype = np.dtype(dtype)
    if (
        dtype == jax.dtypes.float0
        or jnp.issubdtype(dtype, jnp.integer)
        or jnp.issubdtype(dtype, jnp.bool_)
    ):
        return Kind.INERT
    if jnp.issubdtype(dtype, jnp.complexfloating):
        if not complex_ok:
            raise TypeError(
                f"{rule}: {what} at {leaf_path(tree, index)} is complex ({dtype}), "
                f"and the {rule} rule is not defined for complex parameters. Use a "
                "rule that supports them (sgd, adam, adamw, adagrad, rmsprop, lamb, "
                "normalized_sgd), or split the parameter into real and imaginary "
                "parts."
            )
        return Kind.COMPLEX
    if jnp.issubdtype(dtype, jnp.floating):
        if jnp.finfo(dtype).bits < 16:
            raise TypeError(
                f"{rule}: {what} at {leaf_path(tree, index)} has dtype {dtype}; "
                "8-bit float parameters are not supported (their steps would "
                "round to zero): keep the parameters in bfloat16 or float32 "
                "and cast them for the forward pass."
            )
        return Kind.REAL
    raise TypeError(
        f"{rule}: {what} at {leaf_path(tree, index)} has dtype {dtype}; rules work "
        "on floating-point leaves (float16, bfloat16, float32, float64, complex64, "
        "complex128) and leave integer and boolean leaves untouched. Exclude other "
        "leaves with optax.masked or optax.partition."
    )


def storage_dtype(
    rule: str,
    slot: str,
    option: Slot,
    dtype_arg: str,
    chosen: np.dtype | None,
    param: Any,
    tree: Any,
    index: int,
) -> np.dtype:
    """The dtype a slot of this parameter is stored in.

    Real parameters: the slot's dtype argument, else the parameter's dtype,
    except that squared magnitudes of float16 parameters are kept in float32
    (float16's range loses the squares of gradients below about 5e-3).
    Complex parameters: slots of squared magnitudes (``Slot(square=True)``)
    are real (the argument's dtype, else the parameter's real dtype); other
    slots are complex, of the argument's precision (``float32`` stores
    ``complex64``) or else of the parameter's dtype.
    """
    dtype = np.dtype(param.dtype)
    if not jnp.issubdtype(dtype, jnp.complexfloating):
        if chosen is None and option.square and dtype == np.float16:
            # Squares of gradients below ~5e-3 underflow in float16 (the first
            # Adam step would be -lr / eps): keep them in float32 instead.
            return np.dtype(np.float32)
        return chosen if chosen is not None else dtype
    if option.square:
        return chosen if chosen is not None else real_dtype(dtype)
    if chosen is None:
        return dtype
    if chosen not in _COMPLEX_OF:
        raise TypeError(
            f"{rule}: {dtype_arg}={chosen} cannot store slot {slot!r} of the complex "
            f"parameter at {leaf_path(tree, index)}: there is no complex {chosen}. "
            "Use float32 or float64 (stored as complex64 or complex128)."
        )
    return _COMPLEX_OF[chosen]


def narrower(storage: np.dtype, compute: np.dtype) -> np.dtype | None:
    """``storage`` if it holds fewer bits than ``compute``, else ``None``."""
    if jnp.finfo(storage).bits < jnp.finfo(compute).bits:
        return storage
    return None


def takes_hyperparameters(fn: Callable[..., Any]) -> bool:
    """Whether a slot's ``shape`` or ``init`` function takes two arguments."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        q
        for q in parameters
        if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD, q.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(q.kind is q.VAR_POSITIONAL for q in positional)


def slot_shape(
    option: Slot, shape: tuple[int, ...], hyper: Mapping[str, Any] | None = None
) -> tuple[int, ...]:
    """The shape of a slot of a parameter of shape ``shape``.

    ``Slot(shape=fn)`` calls ``fn(shape)``, or ``fn(shape, hyper)`` when it
    takes two arguments: the bound hyperparameters, of which it may read the
    static ones (a block size) only.
    """
    if option.shape is None:
        return shape
    if takes_hyperparameters(option.shape):
        return tuple(option.shape(shape, hyper or {}))
    return tuple(option.shape(shape))
