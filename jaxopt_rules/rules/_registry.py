"""The catalog's registry: every rule, its test hyperparameters and its reference."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax

from jaxopt_rules._core import CatalogSpec
from jaxopt_rules.rules._adagrad import adagrad
from jaxopt_rules.rules._adam import adam
from jaxopt_rules.rules._adamw import adamw
from jaxopt_rules.rules._lamb import lamb
from jaxopt_rules.rules._lion import lion
from jaxopt_rules.rules._normalized_sgd import normalized_sgd
from jaxopt_rules.rules._rmsprop import rmsprop
from jaxopt_rules.rules._sgd import sgd


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleSpec(CatalogSpec):
    """A catalog rule, with what it is tested with and verified against.

    Attributes:
        name: the public name (``jaxopt_rules.<name>``).
        factory: the public factory.
        hyperparams: hyperparameters for the conformance kit; they make the rule
            converge on the parabola and Rosenbrock problems in 10,000 steps.
        reference: the independent implementation the rule is verified
            against, in words (``"optax.adam"``).
        reference_factory: that implementation, called with the same keyword
            arguments as ``factory``.
        reference_cases: hyperparameter sets (covering every option) on which
            trajectories are compared with the reference.
    """

    reference: str
    reference_factory: Callable[..., optax.GradientTransformation]
    reference_cases: tuple[Mapping[str, Any], ...]


def _normalized_sgd_reference(
    learning_rate: optax.ScalarOrSchedule, eps: float = 1e-6
) -> optax.GradientTransformation:
    return optax.chain(
        optax.normalize_by_update_norm(scale_factor=1.0, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


_WEIGHT_DECAY_MASK = {
    "dense": {"w": True, "b": False},
    "conv": True,
    "scale": False,
    "frozen": None,
}

REGISTRY: tuple[RuleSpec, ...] = (
    RuleSpec(
        name="sgd",
        factory=sgd,
        hyperparams={"learning_rate": 1e-3, "momentum": 0.9},
        reference="optax.sgd",
        reference_factory=optax.sgd,
        reference_cases=(
            {"learning_rate": 0.05},
            {"learning_rate": 0.05, "momentum": 0.9},
            {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
            {"learning_rate": 0.05, "momentum": 0.0},
        ),
    ),
    RuleSpec(
        name="adam",
        factory=adam,
        hyperparams={"learning_rate": 1e-1},
        reference="optax.adam",
        reference_factory=optax.adam,
        reference_cases=(
            {"learning_rate": 1e-2},
            {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
            {"learning_rate": 1e-2, "eps_root": 1e-8, "nesterov": True},
            {"learning_rate": 1e-2, "b1": 0.0},
        ),
    ),
    RuleSpec(
        name="adamw",
        factory=adamw,
        hyperparams={"learning_rate": 1e-1},
        reference="optax.adamw",
        reference_factory=optax.adamw,
        reference_cases=(
            {"learning_rate": 1e-2},
            {"learning_rate": 1e-2, "weight_decay": 0.1, "nesterov": True},
            {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": _WEIGHT_DECAY_MASK},
            {
                "learning_rate": 1e-2,
                "weight_decay": 0.1,
                "mask": lambda tree: {k: k != "scale" for k in tree},
            },
        ),
    ),
    RuleSpec(
        name="rmsprop",
        factory=rmsprop,
        hyperparams={"learning_rate": 5e-3},
        reference="optax.rmsprop",
        reference_factory=optax.rmsprop,
        reference_cases=(
            {"learning_rate": 1e-2},
            {
                "learning_rate": 1e-2,
                "decay": 0.99,
                "eps_in_sqrt": False,
                "initial_scale": 0.1,
            },
            {
                "learning_rate": 1e-2,
                "centered": True,
                "bias_correction": True,
                "eps": 1e-4,
            },
            {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True},
            {
                "learning_rate": 1e-3,
                "centered": True,
                "momentum": 0.5,
                "eps_in_sqrt": False,
                "eps": 1e-2,
            },
        ),
    ),
    RuleSpec(
        name="adagrad",
        factory=adagrad,
        hyperparams={"learning_rate": 1.0},
        reference="optax.adagrad",
        reference_factory=optax.adagrad,
        reference_cases=(
            {"learning_rate": 0.1},
            {"learning_rate": 0.1, "initial_accumulator_value": 0.0, "eps": 1e-10},
        ),
    ),
    RuleSpec(
        name="lion",
        factory=lion,
        hyperparams={"learning_rate": 2e-3, "weight_decay": 0.0},
        reference="optax.lion",
        reference_factory=optax.lion,
        reference_cases=(
            {"learning_rate": 1e-3},
            {"learning_rate": 1e-3, "b1": 0.95, "b2": 0.98, "weight_decay": 0.1},
            {"learning_rate": 1e-3, "weight_decay": 0.1, "mask": _WEIGHT_DECAY_MASK},
        ),
    ),
    RuleSpec(
        name="lamb",
        factory=lamb,
        hyperparams={"learning_rate": 1e-3},
        reference="optax.lamb",
        reference_factory=optax.lamb,
        reference_cases=(
            {"learning_rate": 1e-2},
            {"learning_rate": 1e-2, "weight_decay": 0.1, "eps": 1e-8},
            {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": _WEIGHT_DECAY_MASK},
        ),
    ),
    RuleSpec(
        name="normalized_sgd",
        factory=normalized_sgd,
        hyperparams={"learning_rate": 1e-2},
        reference="optax.chain(optax.normalize_by_update_norm, "
        "optax.scale_by_learning_rate)",
        reference_factory=_normalized_sgd_reference,
        reference_cases=(
            {"learning_rate": 1e-2},
            {"learning_rate": 1e-2, "eps": 1e-3},
        ),
    ),
)
"""Every rule of the catalog. The test suite runs the conformance kit and the
reference comparison over each entry, so a rule added here is fully checked."""
