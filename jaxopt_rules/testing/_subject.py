"""The rule under test: a factory, its hyperparameters and the programs checks share."""

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules.testing._problems import Problem, example_loss, example_params
from jaxopt_rules.testing._programs import Step, StepProgram
from jaxopt_rules.testing._update_args import (
    Loss,
    fed_plain_gradients,
    with_update_args,
)


# Two runs of the same float32 arithmetic compiled in different programs may
# round differently (fusion, FMA contraction); a few ulps over a few steps.
RTOL = 1e-6
ATOL = 1e-7

TRAJECTORY_STEPS = 5
"""Steps of the shared trajectory (the longest any check compares: ``scan``)."""


class CheckSkipped(Exception):
    """A check does not apply to this rule or this machine.

    The message says why, and how to make the check run.
    """


@dataclasses.dataclass(frozen=True)
class RuleUnderTest:
    """A rule factory with the hyperparameters to check it with.

    One instance is shared by every check of one :func:`check_rule` call, so
    that programs several checks need (the jitted step of the rule on the
    example tree, its first steps) are compiled and run once.

    Attributes:
        factory: a callable returning an ``optax.GradientTransformation``.
        hyperparams: keyword arguments for ``factory``; they must make the rule
            converge on the parabola and Rosenbrock problems in ``steps`` steps.
        static_args: passed to ``optax.inject_hyperparams`` (default: the
            factory's ``static_args`` attribute, if any).
        steps: steps allowed for the convergence checks.
        matrices_only: the rule takes 2-d leaves only; every problem then has
            matrix leaves (same tree structure and names).
        update_args: extra arguments ``update`` needs (``"value"``,
            ``"value_fn"``, ``"grad"``), computed from each problem's loss at
            the parameters; see :attr:`tx` and :meth:`feed`.
        schedule_arg: the hyperparameter the schedule checks drive (default:
            ``learning_rate``, or torch's ``lr``).
    """

    factory: Callable[..., optax.GradientTransformation]
    hyperparams: Mapping[str, Any]
    static_args: tuple[str, ...] = ()
    steps: int = 10_000
    matrices_only: bool = False
    update_args: tuple[str, ...] = ()
    schedule_arg: str | None = None
    _shared: dict[Any, Any] = dataclasses.field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def make(self, **overrides: Any) -> optax.GradientTransformationExtraArgs:
        """A new transform with ``overrides`` applied to the hyperparameters.

        Its ``update`` takes the rule's :attr:`update_args` from the caller:
        wrap the outermost transform of a check with :meth:`feed`.
        """
        return self.adapt(self.factory(**{**self.hyperparams, **overrides}))

    def adapt(
        self, tx: optax.GradientTransformation
    ) -> optax.GradientTransformationExtraArgs:
        """``tx`` with extra-argument support; fed per-example batches if it takes them.

        For a rule whose ``update`` takes per-example gradients (DP-SGD), each
        gradient becomes a batch of examples with that mean (see
        :func:`as_per_example`); other rules are unchanged.
        """
        return optax.with_extra_args_support(fed_plain_gradients(tx, self.factory))

    def feed(
        self, tx: optax.GradientTransformation, loss: Loss = example_loss
    ) -> optax.GradientTransformationExtraArgs:
        """``tx`` computing the rule's :attr:`update_args` from ``loss`` each step."""
        return with_update_args(tx, self.update_args, loss)

    def shared(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, computed once per instance and ``key`` (checks share it)."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    @property
    def tx(self) -> optax.GradientTransformationExtraArgs:
        """The transform on the example loss, made once and shared by the checks."""
        return self.shared("tx", lambda: self.feed(self.make()))

    @property
    def program(self) -> StepProgram:
        """The jitted (donated) step of :attr:`tx`, shared by the checks."""
        return self.shared("program", lambda: StepProgram(self.tx))

    def params(self, dtype: Any = jnp.float32, seed: int = 0) -> dict[str, Any]:
        """The example tree (:func:`example_params`) in this rule's leaf shapes."""
        return example_params(dtype, seed, matrices_only=self.matrices_only)

    def problem(self, make: Callable[..., Problem]) -> Problem:
        """A problem (``parabola``, ``rosenbrock``) in this rule's leaf shapes."""
        return make(matrices_only=self.matrices_only)

    def trajectory(
        self, dtype: Any = jnp.float32, seed: int = 0, steps: int = TRAJECTORY_STEPS
    ) -> list[Step]:
        """The first steps of :attr:`program` from :meth:`params`, run once.

        Returns:
            ``[(updates, state, params)]`` after each step.
        """
        key = ("trajectory", jnp.dtype(dtype).name, seed)
        cached = self._shared.get(key, [])
        if len(cached) < steps:
            cached = self.program.run(
                self.params(dtype, seed), max(steps, TRAJECTORY_STEPS)
            )
            self._shared[key] = cached
        return cached[:steps]

    @property
    def learning_rate_name(self) -> str:
        """The learning rate's argument name: optax's, or torch's ``lr``."""
        if self.schedule_arg is not None:
            return self.schedule_arg
        try:
            parameters = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return "learning_rate"
        if "learning_rate" not in parameters and "lr" in parameters:
            return "lr"
        return "learning_rate"

    @property
    def learning_rate(self) -> Any:
        """The learning-rate hyperparameter (its default when not given)."""
        name = self.learning_rate_name
        if name in self.hyperparams:
            return self.hyperparams[name]
        try:
            parameter = inspect.signature(self.factory).parameters[name]
        except (KeyError, TypeError, ValueError):
            return None
        return None if parameter.default is parameter.empty else parameter.default
