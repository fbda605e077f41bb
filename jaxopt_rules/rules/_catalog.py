"""Marking the catalog's public factories with the rule they front."""

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
        static: list[str] = []
        for r in rules:
            static += [name for name in r.static_args if name not in static]
        setattr(factory, "static_args", tuple(static))  # noqa: B010
        setattr(factory, "rules", rules)  # noqa: B010
        return factory

    return mark
