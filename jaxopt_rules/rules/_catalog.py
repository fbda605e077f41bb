"""Marking the catalog's public factories with the rule they front."""

import inspect
from collections.abc import Callable
from typing import TypeVar

from jaxopt_rules._core import RuleFactory


F = TypeVar("F", bound=Callable[..., object])


def catalog_entry(*rules: RuleFactory) -> Callable[[F], F]:
    """Records on a public factory the rules it builds and their static args.

    The catalog's factories are plain functions with optax's exact signatures;
    this attaches ``static_args`` (what to pass to ``optax.inject_hyperparams``
    besides booleans) and ``rules`` (the underlying :class:`RuleFactory`
    objects) so tools can find them.
    """

    def mark(factory: F) -> F:
        # Only what the public factory takes (a factory may not expose every
        # argument of its rule, such as the slot dtypes).
        accepted = inspect.signature(factory).parameters
        static: list[str] = []
        for r in rules:
            static += [n for n in r.static_args if n not in static and n in accepted]
        setattr(factory, "static_args", tuple(static))  # noqa: B010
        setattr(factory, "rules", rules)  # noqa: B010
        return factory

    return mark
