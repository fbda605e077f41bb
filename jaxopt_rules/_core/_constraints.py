"""Hyperparameter values: what kind of value is accepted, and constraints.

Every numeric hyperparameter takes a number, a scalar array (possibly traced)
or a schedule; :func:`check_value` refuses anything else with a message that
names the hyperparameter (``None``, a string such as ``"1e-3"`` read from a
config file, a list), unless the rule function's signature admits it: a
default of ``None``, or an annotation that includes the value's type
(``momentum: Scalar | None``, ``mode: str``). :func:`check_schedule_value`
does the same for what a schedule returns, at trace time.

A rule declares constraints as short strings (``"[0, 1)"``, ``">= 0"``) or as
predicates. They are checked when the factory is called with a concrete number;
traced values (inside ``optax.inject_hyperparams`` or a ``vmap`` over
hyperparameters) and schedules are never branched on.
"""

import dataclasses
import inspect
import math
import operator
import re
import types
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,]+?)\s*,\s*([^\])]+?)\s*([\])])\s*$")
_COMPARISON = re.compile(r"^\s*(>=|>|<=|<)\s*(\S+)\s*$")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A named predicate on one concrete scalar hyperparameter."""

    description: str
    predicate: Callable[[float], bool]

    def violation(self, name: str, value: float) -> str | None:
        """Returns an error message if ``value`` breaks the constraint."""
        try:
            ok = bool(self.predicate(value))
        except (TypeError, ValueError):
            ok = False
        if ok:
            return None
        return f"{name} must be {self.description}, got {value!r}"


def _parse_bound(text: str) -> float:
    text = text.strip()
    if text in ("inf", "+inf"):
        return math.inf
    if text == "-inf":
        return -math.inf
    return float(text)


def parse_constraint(spec: "str | Constraint | Callable[[float], bool]") -> Constraint:
    """Turns ``"[0, 1)"``, ``"> 0"`` or a predicate into a :class:`Constraint`."""
    if isinstance(spec, Constraint):
        return spec
    if callable(spec):
        name = getattr(spec, "__name__", "a valid value")
        return Constraint(f"accepted by {name}", spec)
    match = _INTERVAL.match(spec)
    if match:
        left, lo_text, hi_text, right = match.groups()
        lo, hi = _parse_bound(lo_text), _parse_bound(hi_text)
        lo_op = operator.ge if left == "[" else operator.gt
        hi_op = operator.le if right == "]" else operator.lt

        def in_interval(v: float) -> bool:
            return lo_op(v, lo) and hi_op(v, hi)

        return Constraint(f"in {spec.strip()}", in_interval)
    match = _COMPARISON.match(spec)
    if match:
        op_text, bound_text = match.groups()
        op, bound = _COMPARISONS[op_text], _parse_bound(bound_text)
        return Constraint(f"{op_text} {bound_text}", lambda v: op(v, bound))
    raise ValueError(
        f"cannot parse constraint {spec!r}; use an interval such as '[0, 1)' "
        "or a comparison such as '>= 0'"
    )


def concrete_scalar(value: Any) -> float | None:
    """Returns ``value`` as a float if it is a concrete real scalar, else None.

    Tracers, schedules, ``None`` and non-numeric values give None: they are not
    checked here (a traced value cannot be branched on without breaking
    ``optax.inject_hyperparams``).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Tracer):
        return None
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        if np.shape(value) != () or not np.issubdtype(value.dtype, np.number):
            return None
        if np.iscomplexobj(value):
            return None
        return float(value)
    return None


def is_numeric(value: Any) -> bool:
    """Whether ``value`` is a number or an array (maybe traced) of numbers or bools."""
    if isinstance(value, bool | int | float | complex):
        return True
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        dtype = value.dtype
        return jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
    return False


def admits(annotation: Any, value: Any) -> bool:
    """Whether a parameter annotation explicitly admits ``value``'s type.

    ``Any`` admits everything; unions admit what one member admits; a generic
    alias (``tuple[float, float]``) admits instances of its origin; a string
    annotation (postponed evaluation) admits ``None`` when it names ``None`` or
    ``Optional`` and other values when it names their type. No annotation
    admits nothing.

    Example:
        >>> admits(float | None, None), admits(float, "1e-3"), admits(str, "a")
        (True, False, True)
    """
    if annotation is inspect.Parameter.empty:
        return False
    if annotation is Any:
        return True
    if isinstance(annotation, str):
        words = set(re.findall(r"\w+", annotation))
        if "Any" in words:
            return True
        if value is None:
            return bool({"None", "Optional"} & words)
        return type(value).__name__ in words
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(admits(arg, value) for arg in args)
    if origin is typing.Annotated:
        return admits(args[0], value)
    if origin is typing.Literal:
        return value in args
    target = origin if origin is not None else annotation
    if isinstance(target, type):
        try:
            return isinstance(value, target)
        except TypeError:
            return False
    return False


def describe(value: Any) -> str:
    """A short description of a bad value for an error message."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        return f"an array of dtype {value.dtype} and shape {tuple(np.shape(value))}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name} ({text})"


def _string_hint(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return ""
    return (
        f"; pass a float: {number!r} (YAML 1.1 loaders such as PyYAML read a "
        "number written without a decimal point, like 1e-3, as a string)"
    )


def check_value(rule: str, name: str, parameter: inspect.Parameter, value: Any) -> None:
    """Refuses a value that is neither numeric, a schedule, nor admitted.

    Numbers and scalar arrays (the shape is checked by the caller), bools and
    callables pass. ``None`` passes when the rule function gives the
    hyperparameter a default of ``None`` or an annotation admitting ``None``;
    other values when the annotation admits their type (:func:`admits`).

    Args:
        rule: the rule's name, for the message.
        name: the hyperparameter's name.
        parameter: its keyword-only parameter in the rule function.
        value: the value the factory was called with.

    Raises:
        TypeError: naming the rule, the hyperparameter and the value.
    """
    if is_numeric(value) or callable(value):
        return
    if value is None and parameter.default is None:
        return
    if admits(parameter.annotation, value):
        return
    if value is None:
        raise TypeError(
            f"{rule}: {name} is None; pass a number or a schedule (a function "
            "of the step count). None is accepted only by hyperparameters that "
            "default to None. (Under optax.inject_hyperparams, a schedule that "
            "returned None gives this error too.)"
        )
    hint = _string_hint(value) if isinstance(value, str) else ""
    raise TypeError(
        f"{rule}: {name} must be a number, a scalar array or a schedule, got "
        f"{describe(value)}{hint}"
    )


def check_schedule_value(rule: str, name: str, value: Any) -> None:
    """Refuses what a schedule returned unless it is a numeric scalar.

    Called at trace time with the schedule's output for the step count (a
    Python number, or a possibly traced array).

    Raises:
        TypeError: the schedule returned ``None``, a string or a non-number.
        ValueError: it returned an array that is not a scalar.
    """
    if not is_numeric(value):
        hint = _string_hint(value) if isinstance(value, str) else ""
        raise TypeError(
            f"{rule}: the schedule given as {name} returned {describe(value)}"
            f"{hint}; a schedule must return a scalar number for every step "
            "count"
        )
    if np.ndim(value) != 0:
        raise ValueError(
            f"{rule}: the schedule given as {name} returned an array of shape "
            f"{tuple(np.shape(value))}; a schedule must return a scalar (one "
            "value per step for the whole tree)"
        )


def checked_scalar_or_schedule(
    rule: str, name: str, value: Any, *, none_ok: bool = False
) -> Any:
    """A step size given to a build function, refused now if it cannot work.

    For hyperparameters a composite (:func:`jaxopt_rules.composite`) handles
    itself rather than handing to its rule: the same errors as a rule's
    (:func:`check_value`, :func:`check_schedule_value`). A number or scalar
    array is returned as is; a schedule is returned wrapped so that what it
    returns is checked when ``update`` is traced.

    Args:
        rule: the rule's name, for the messages.
        name: the hyperparameter's name.
        value: what the factory was called with.
        none_ok: ``None`` is accepted (and returned).

    Raises:
        TypeError: ``value`` is neither a number nor a schedule.
        ValueError: ``value`` is an array that is not a scalar.
    """
    parameter = inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None if none_ok else 0.0
    )
    check_value(rule, name, parameter, value)
    if value is None or not callable(value):
        if value is not None and np.ndim(value) != 0:
            raise ValueError(
                f"{rule}: {name} must be a scalar, got an array of shape "
                f"{tuple(np.shape(value))}"
            )
        return value
    schedule = value

    def checked(count: Any) -> Any:
        out = schedule(count)
        check_schedule_value(rule, name, out)
        return out

    return checked
