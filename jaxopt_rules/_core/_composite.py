"""Catalog factories built around one rule, for what a per-leaf function cannot do.

Most rules are one per-leaf function (:func:`rule`). A few need tree-level work
the per-leaf core does not express: Sophia's Hessian-diagonal estimate is a
Hessian-vector product of the whole loss, made every few steps by any optax
transform with its own state. Such a rule is still *one* per-leaf rule (its
arithmetic, slots, dtypes, schedules and masks handled by the core) wrapped by
a short build function that does the tree-level part and hands its result to
the rule as an extra argument of ``update``. :class:`CompositeFactory` is that
build function with the attributes the registry, the conformance kit and
``optax.inject_hyperparams`` read from a :class:`RuleFactory`.
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from jaxopt_rules._core._definition import RuleDefinition
from jaxopt_rules._core._factory import RuleFactory


class CompositeFactory:
    """A factory of optax transforms: one :class:`RuleFactory` and tree-level work.

    Calling it calls the build function. Its name, docstring and signature are
    the build function's.

    Attributes:
        rule: the per-leaf rule inside (a :class:`RuleFactory`).
        definition: that rule's definition as the composite presents it: the
            rule's slots and options, with ``extra_args`` the arguments the
            composite's ``update`` takes (``("obj_fn",)`` for Sophia) instead
            of those the composite computes and hands to the rule.
        static_args: names to pass as ``static_args`` to
            ``optax.inject_hyperparams``: the rule's, and the build function's
            non-numeric arguments (a transform, a flag).
        per_example: ``update`` takes per-example gradients (a leading batch
            axis on every leaf, as optax's DP-SGD); the conformance kit feeds
            it a batch of examples whose mean is each gradient it checks.
    """

    __name__: str
    rule: RuleFactory
    definition: RuleDefinition
    static_args: tuple[str, ...]
    per_example: bool
    __signature__: inspect.Signature

    def __init__(
        self,
        build: Callable[..., optax.GradientTransformationExtraArgs],
        rule: RuleFactory,
        *,
        update_args: Sequence[str] = (),
        static_args: Sequence[str] = (),
        per_example: bool = False,
    ) -> None:
        if not isinstance(rule, RuleFactory):
            raise TypeError(f"composite: rule must be a RuleFactory, got {rule!r}")
        functools.update_wrapper(self, build)
        self._build = build
        self.rule = rule
        self.per_example = per_example
        self.__signature__ = inspect.signature(build)
        self.definition = dataclasses.replace(
            rule.definition, name=build.__name__, extra_args=tuple(update_args)
        )
        accepted = self.__signature__.parameters
        unknown = [n for n in static_args if n not in accepted]
        if unknown:
            raise TypeError(
                f"composite {build.__name__!r}: static_args {unknown} are not "
                f"parameters of the build function ({list(accepted)})"
            )
        self.static_args = tuple(
            n for n in dict.fromkeys((*rule.static_args, *static_args)) if n in accepted
        )

    def __call__(
        self, *args: Any, **kwargs: Any
    ) -> optax.GradientTransformationExtraArgs:
        """Builds the transform."""
        try:
            self.__signature__.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{self.__name__}(): {error}") from None
        return self._build(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<composite rule {self.__name__}{self.__signature__}>"


def composite(
    rule: RuleFactory,
    *,
    update_args: Sequence[str] = (),
    static_args: Sequence[str] = (),
    per_example: bool = False,
) -> Callable[[Callable[..., Any]], CompositeFactory]:
    """Decorates a build function around ``rule`` into a :class:`CompositeFactory`.

    Args:
        rule: the per-leaf rule the build function wraps.
        update_args: the extra arguments of the built transform's ``update``
            that a training loop passes (``"obj_fn"``); the conformance kit
            computes them from each problem's loss.
        static_args: the build function's arguments that are not numbers, for
            ``optax.inject_hyperparams`` (the rule's are added).
        per_example: the built transform's ``update`` takes per-example
            gradients (see :class:`CompositeFactory`).

    Returns:
        A decorator.
    """

    def wrap(build: Callable[..., Any]) -> CompositeFactory:
        return CompositeFactory(
            build,
            rule,
            update_args=update_args,
            static_args=static_args,
            per_example=per_example,
        )

    return wrap


def init_with_last_field(
    inner_init: Callable[[Any], Any],
    state_class: Any,
    last: Callable[[Any], Any],
) -> optax.TransformInitFn:
    """A composite's ``init``: the inner transform's fields, then ``last(params)``.

    Abstract parameters (``jax.ShapeDtypeStruct`` leaves) give an abstract
    state, as a rule's ``init`` does.
    """

    def init(params: Any) -> Any:
        if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params)):
            return jax.eval_shape(init, params)
        fields: Any = inner_init(params)
        return state_class(*fields, last(params))

    return init


def split_last_field(
    name: str,
    state: Any,
    state_class: Any,
    inner: Callable[[Any], Any] | type,
    params: Any,
) -> tuple[Any, Any]:
    """The inner transform's state and the last field, from a composite's state.

    ``inner`` is the inner state's class, or the inner transform's ``init``
    (whose state class for ``params`` is then found by ``jax.eval_shape``).

    Raises:
        TypeError: ``state`` is not a ``state_class`` (from another
            transform's ``init``), named.
    """
    if not isinstance(state, state_class):
        raise TypeError(
            f"{name}: expected a {state_class.__name__} (from this transform's "
            f"init), got {type(state).__name__}"
        )
    inner_class = (
        inner if isinstance(inner, type) else type(jax.eval_shape(inner, params))
    )
    return inner_class(*state[:-1]), state[-1]
