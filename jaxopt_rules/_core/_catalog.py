"""What every registry entry has: a name, a factory and its kit hyperparameters."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax


@dataclasses.dataclass(frozen=True)
class CatalogSpec:
    """A registered rule: the base of both registries' entries.

    The conformance kit and the tests parametrized over a registry read these
    fields only; each registry's subclass adds what its rules are verified
    against.

    Attributes:
        name: the public name of the factory in its namespace.
        factory: the public factory (usually a :class:`RuleFactory`).
        hyperparams: hyperparameters for the conformance kit; they make the rule
            converge on the parabola and Rosenbrock problems in 10,000 steps.
        schedule_arg: the hyperparameter the kit's schedule checks drive, where
            the rule has no ``learning_rate`` (``polyak_sgd``: ``scaling``).
        convergence_steps: steps the kit's convergence checks allow (sign
            descent with a fixed step needs a small step, hence more of them).
        reads_whole_leaves: whether an element's update reads other elements
            of its leaf (a leaf's norm or trust ratio, factored moments).
            :func:`jaxopt_rules.flat_leaves` makes one leaf of many, so these
            rules change their numbers there; sums over the whole tree (a
            global norm, the loss) stay the same sums.
    """

    name: str
    factory: Callable[..., optax.GradientTransformationExtraArgs]
    hyperparams: Mapping[str, Any]
    schedule_arg: str | None = None
    convergence_steps: int = 10_000
    reads_whole_leaves: bool = False

    @property
    def update_args(self) -> tuple[str, ...]:
        """Arguments ``update`` needs besides the gradients (``"value"``)."""
        definition = getattr(self.factory, "definition", None)
        return tuple(getattr(definition, "extra_args", ()))

    @property
    def static_args(self) -> tuple[str, ...]:
        """Arguments to declare static in ``optax.inject_hyperparams``."""
        return tuple(getattr(self.factory, "static_args", ()))
