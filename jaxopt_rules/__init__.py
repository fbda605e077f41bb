"""jaxopt_rules: optimizer rules for JAX, written once per leaf, checked, verified.

Every rule is an ``optax.GradientTransformationExtraArgs``. Write your own with
:func:`rule`; check any rule with :mod:`jaxopt_rules.testing`; pick from the
catalog (:data:`REGISTRY`).
"""

import importlib.metadata as _metadata

from jaxopt_rules import (
    checkpoint as checkpoint,
    logging as logging,
    quantized as quantized,
    rules as rules,
    testing as testing,
    torch_compat as torch_compat,
    wrappers as wrappers,
)
from jaxopt_rules._bytes import tree_bytes as tree_bytes
from jaxopt_rules._core import (
    Array as Array,
    RuleFactory as RuleFactory,
    Scalar as Scalar,
    Slot as Slot,
    abs_sq as abs_sq,
    report as report,
    rule as rule,
)
from jaxopt_rules._inject import inject_hyperparams as inject_hyperparams
from jaxopt_rules._sweep import sweep as sweep
from jaxopt_rules.checkpoint import (
    from_optax as from_optax,
    restore_state as restore_state,
    to_optax as to_optax,
)
from jaxopt_rules.logging import (
    CsvSink as CsvSink,
    JsonLinesSink as JsonLinesSink,
    LoggingSink as LoggingSink,
    TensorBoardSink as TensorBoardSink,
    log_step as log_step,
)
from jaxopt_rules.quantized import (
    QuantizedArray as QuantizedArray,
    QuantizedState as QuantizedState,
    is_quantized as is_quantized,
    quantized_state as quantized_state,
)
from jaxopt_rules.rules import (
    REGISTRY as REGISTRY,
    RuleSpec as RuleSpec,
    acprop as acprop,
    adabelief as adabelief,
    adadelta as adadelta,
    adafactor as adafactor,
    adagrad as adagrad,
    adam as adam,
    adamax as adamax,
    adamaxw as adamaxw,
    adamw as adamw,
    adan as adan,
    ademamix as ademamix,
    adopt as adopt,
    amsgrad as amsgrad,
    cocob as cocob,
    dadapt_adamw as dadapt_adamw,
    dog as dog,
    dowg as dowg,
    fromage as fromage,
    lamb as lamb,
    lars as lars,
    lion as lion,
    momo as momo,
    momo_adam as momo_adam,
    nadam as nadam,
    nadamw as nadamw,
    normalized_sgd as normalized_sgd,
    novograd as novograd,
    optimistic_adam as optimistic_adam,
    optimistic_adam_v2 as optimistic_adam_v2,
    optimistic_gradient_descent as optimistic_gradient_descent,
    polyak_sgd as polyak_sgd,
    prodigy as prodigy,
    radam as radam,
    rmsprop as rmsprop,
    rprop as rprop,
    schedule_free_adamw as schedule_free_adamw,
    schedule_free_sgd as schedule_free_sgd,
    sgd as sgd,
    sign_sgd as sign_sgd,
    signum as signum,
    simplified_ademamix as simplified_ademamix,
    yogi as yogi,
)
from jaxopt_rules.wrappers import (
    FlatState as FlatState,
    flat_leaves as flat_leaves,
)


__all__ = [
    "REGISTRY",
    "Array",
    "CsvSink",
    "FlatState",
    "JsonLinesSink",
    "LoggingSink",
    "QuantizedArray",
    "QuantizedState",
    "RuleFactory",
    "RuleSpec",
    "Scalar",
    "Slot",
    "TensorBoardSink",
    "__version__",
    "abs_sq",
    "acprop",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "ademamix",
    "adopt",
    "amsgrad",
    "checkpoint",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "flat_leaves",
    "from_optax",
    "fromage",
    "inject_hyperparams",
    "is_quantized",
    "lamb",
    "lars",
    "lion",
    "log_step",
    "logging",
    "momo",
    "momo_adam",
    "nadam",
    "nadamw",
    "normalized_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "prodigy",
    "quantized",
    "quantized_state",
    "radam",
    "report",
    "restore_state",
    "rmsprop",
    "rprop",
    "rule",
    "rules",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "sgd",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "sweep",
    "testing",
    "to_optax",
    "torch_compat",
    "tree_bytes",
    "wrappers",
    "yogi",
]


try:
    __version__ = _metadata.version("jaxopt_rules")
except _metadata.PackageNotFoundError:  # a source checkout on sys.path
    __version__ = "0+unknown"
