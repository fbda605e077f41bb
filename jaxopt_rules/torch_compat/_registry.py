"""The torch_compat registry: each factory, its torch class and its test cases."""

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from jaxopt_rules._core import CatalogSpec
from jaxopt_rules.torch_compat._adadelta import adadelta
from jaxopt_rules.torch_compat._adafactor import adafactor
from jaxopt_rules.torch_compat._adagrad import adagrad
from jaxopt_rules.torch_compat._adam import adam, adamw
from jaxopt_rules.torch_compat._adamax import adamax
from jaxopt_rules.torch_compat._asgd import asgd
from jaxopt_rules.torch_compat._muon import muon
from jaxopt_rules.torch_compat._nadam import nadam
from jaxopt_rules.torch_compat._radam import radam
from jaxopt_rules.torch_compat._rmsprop import rmsprop
from jaxopt_rules.torch_compat._rprop import rprop
from jaxopt_rules.torch_compat._sgd import sgd


@dataclasses.dataclass(frozen=True, kw_only=True)
class TorchSpec(CatalogSpec):
    """A torch_compat factory and what it is verified with.

    Attributes:
        name: the factory's name in ``jaxopt_rules.torch_compat``.
        factory: the factory (torch's argument names and defaults).
        hyperparams: arguments for the conformance kit (they make the rule
            converge on its parabola and Rosenbrock problems).
        torch_class: the ``torch.optim`` class it reproduces.
        cases: option sets, covering every option, on which 100-step
            trajectories are compared with torch (``tests/torch_fixtures``).
        matrices_only: the algorithm takes 2-d parameters only (Muon): its
            problems have matrix leaves only.
        tolerance: relative tolerance of the trajectory comparison per
            dtype, where it is not the default (1e-10 float64, 1e-5 float32).
    """

    torch_class: str
    cases: tuple[Mapping[str, Any], ...]
    matrices_only: bool = False
    tolerance: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"float64": 1e-10, "float32": 1e-5}
    )


_LISTED: tuple[TorchSpec, ...] = (
    TorchSpec(
        name="sgd",
        factory=sgd,
        torch_class="SGD",
        hyperparams={"lr": 1e-3, "momentum": 0.9},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "momentum": 0.9},
            {"lr": 1e-2, "momentum": 0.9, "dampening": 0.1},
            {"lr": 1e-2, "momentum": 0.9, "nesterov": True},
            {"lr": 1e-2, "weight_decay": 0.01, "maximize": True},
            {"lr": 1e-2, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.01},
        ),
    ),
    TorchSpec(
        name="adam",
        factory=adam,
        torch_class="Adam",
        hyperparams={"lr": 1e-1},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
            {"lr": 1e-2, "amsgrad": True, "maximize": True},
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.05},
        ),
    ),
    TorchSpec(
        name="adamw",
        factory=adamw,
        torch_class="AdamW",
        hyperparams={"lr": 1e-1, "weight_decay": 0.0},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
            {"lr": 1e-2, "betas": (0.85, 0.95), "maximize": True, "weight_decay": 0},
        ),
    ),
    TorchSpec(
        name="adagrad",
        factory=adagrad,
        torch_class="Adagrad",
        hyperparams={"lr": 0.5},
        cases=(
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01},
            {
                "lr": 0.1,
                "initial_accumulator_value": 0.1,
                "eps": 1e-6,
                "maximize": True,
            },
        ),
    ),
    TorchSpec(
        name="adadelta",
        factory=adadelta,
        torch_class="Adadelta",
        hyperparams={"lr": 2e-3, "eps": 1.0},
        cases=(
            {"lr": 1.0},
            {"lr": 1.0, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.01},
            {"lr": 0.5, "maximize": True},
        ),
    ),
    TorchSpec(
        name="adamax",
        factory=adamax,
        torch_class="Adamax",
        hyperparams={"lr": 1e-1},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01},
            {"lr": 1e-2, "maximize": True},
        ),
    ),
    TorchSpec(
        name="nadam",
        factory=nadam,
        torch_class="NAdam",
        hyperparams={"lr": 1e-2},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.01},
            {"lr": 1e-2, "weight_decay": 0.05, "decoupled_weight_decay": True},
            {
                "lr": 1e-2,
                "momentum_decay": 1e-2,
                "betas": (0.85, 0.99),
                "maximize": True,
            },
        ),
    ),
    TorchSpec(
        name="radam",
        factory=radam,
        torch_class="RAdam",
        hyperparams={"lr": 1e-2},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.01},
            {"lr": 1e-2, "weight_decay": 0.05, "decoupled_weight_decay": True},
            {"lr": 1e-2, "betas": (0.85, 0.99), "eps": 1e-6, "maximize": True},
        ),
    ),
    TorchSpec(
        name="rmsprop",
        factory=rmsprop,
        torch_class="RMSprop",
        hyperparams={"lr": 5e-3},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "centered": True},
            {"lr": 1e-3, "momentum": 0.9},
            {"lr": 1e-3, "centered": True, "momentum": 0.5, "weight_decay": 0.01},
            {"lr": 1e-3, "alpha": 0.9, "eps": 1e-6, "maximize": True},
        ),
    ),
    TorchSpec(
        name="rprop",
        factory=rprop,
        torch_class="Rprop",
        hyperparams={"lr": 1e-2},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "etas": (0.3, 1.5), "step_sizes": (1e-4, 0.5)},
            {"lr": 1e-3, "maximize": True},
        ),
    ),
    TorchSpec(
        name="adafactor",
        factory=adafactor,
        torch_class="Adafactor",
        hyperparams={"lr": 1e-2},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.1, "d": 2.0},
            {"lr": 1e-2, "beta2_decay": -0.9},
            {"lr": 1e-2, "eps": (1e-5, 1e-2), "maximize": True},
        ),
    ),
    TorchSpec(
        name="muon",
        factory=muon,
        torch_class="Muon",
        hyperparams={"lr": 1e-3},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "nesterov": False, "weight_decay": 0.0},
            {"lr": 1e-2, "adjust_lr_fn": "match_rms_adamw"},
            {"lr": 1e-2, "adjust_lr_fn": "original", "momentum": 0.9},
            {"lr": 1e-2, "ns_coefficients": (3.0, -3.2, 1.2), "ns_steps": 3},
            {"lr": 1e-2, "eps": 1e-5, "weight_decay": 0.05},
        ),
        matrices_only=True,
        # The Newton-Schulz iteration runs in bfloat16 (as in torch): when the
        # two sides' inputs differ in the last float bit, a product can round
        # to the neighbouring bfloat16 number (0.4% of that element), and the
        # trajectories part by up to about 1e-3 after 100 steps.
        tolerance={"float64": 2e-3, "float32": 2e-3},
    ),
    TorchSpec(
        name="asgd",
        factory=asgd,
        torch_class="ASGD",
        hyperparams={"lr": 1e-3},
        cases=(
            {"lr": 1e-2},
            {"lr": 1e-2, "lambd": 1e-2, "alpha": 0.5, "t0": 10},
            {"lr": 1e-2, "weight_decay": 0.01, "maximize": True, "t0": 50},
        ),
    ),
)


def _grid(
    base: Mapping[str, Any],
    valid: Callable[[Mapping[str, Any]], bool] = lambda case: True,
    **choices: tuple[Any, ...],
) -> tuple[Mapping[str, Any], ...]:
    """Every combination of ``choices`` on top of ``base`` that torch accepts."""
    cases = []
    for values in itertools.product(*choices.values()):
        case = {**base, **dict(zip(choices, values, strict=True))}
        if valid(case):
            cases.append(case)
    return tuple(cases)


_ON_OFF = (False, True)
# Every combination of each factory's structural options (the listed cases
# above cover the other hyperparameters).
_COMBINATIONS: dict[str, tuple[Mapping[str, Any], ...]] = {
    "sgd": _grid(
        {"lr": 1e-2},
        lambda c: not c["nesterov"] or (c["momentum"] != 0 and c["dampening"] == 0),
        momentum=(0.0, 0.9),
        dampening=(0.0, 0.1),
        nesterov=_ON_OFF,
        weight_decay=(0.0, 0.01),
        maximize=_ON_OFF,
    ),
    "adam": _grid(
        {"lr": 1e-2},
        amsgrad=_ON_OFF,
        maximize=_ON_OFF,
        decoupled_weight_decay=_ON_OFF,
        weight_decay=(0.0, 0.05),
    ),
    "adamw": _grid(
        {"lr": 1e-2}, amsgrad=_ON_OFF, maximize=_ON_OFF, weight_decay=(0.0, 0.05)
    ),
    "adagrad": _grid(
        {"lr": 0.1},
        lr_decay=(0.0, 0.01),
        weight_decay=(0.0, 0.01),
        initial_accumulator_value=(0.0, 0.1),
        maximize=_ON_OFF,
    ),
    "adadelta": _grid({"lr": 1.0}, weight_decay=(0.0, 0.01), maximize=_ON_OFF),
    "adamax": _grid({"lr": 1e-2}, weight_decay=(0.0, 0.01), maximize=_ON_OFF),
    "nadam": _grid(
        {"lr": 1e-2},
        weight_decay=(0.0, 0.02),
        decoupled_weight_decay=_ON_OFF,
        maximize=_ON_OFF,
    ),
    "radam": _grid(
        {"lr": 1e-2},
        weight_decay=(0.0, 0.02),
        decoupled_weight_decay=_ON_OFF,
        maximize=_ON_OFF,
    ),
    "rmsprop": _grid(
        {"lr": 1e-3},
        centered=_ON_OFF,
        momentum=(0.0, 0.5),
        weight_decay=(0.0, 0.01),
        maximize=_ON_OFF,
    ),
    "rprop": _grid({"lr": 1e-2}, maximize=_ON_OFF),
    "asgd": _grid(
        {"lr": 1e-2}, weight_decay=(0.0, 0.01), maximize=_ON_OFF, t0=(1e6, 10.0)
    ),
    "adafactor": _grid(
        {"lr": 1e-2},
        weight_decay=(0.0, 0.1),
        maximize=_ON_OFF,
        eps=((None, 1e-3), (1e-5, 1e-3)),
    ),
    "muon": _grid(
        {"lr": 1e-2},
        nesterov=_ON_OFF,
        weight_decay=(0.0, 0.05),
        adjust_lr_fn=(None, "original", "match_rms_adamw"),
    ),
}


def _with_combinations(spec: TorchSpec) -> TorchSpec:
    cases = list(spec.cases)
    for case in _COMBINATIONS.get(spec.name, ()):
        if case not in cases:
            cases.append(case)
    return dataclasses.replace(spec, cases=tuple(cases))


REGISTRY: tuple[TorchSpec, ...] = tuple(_with_combinations(s) for s in _LISTED)
"""Every torch_compat factory. The conformance kit and the torch comparison run
over each entry, so a factory added here is fully checked."""
