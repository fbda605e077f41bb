"""The catalog's registry: every rule's entry, in the catalog's order.

Each rule's module defines its entry (``SPEC``, a :class:`RuleSpec`) next to
its definition; a rule added to the catalog is one module here and one line
below.
"""

from jaxopt_rules.rules import (
    _acprop,
    _adabelief,
    _adafactor,
    _adagrad,
    _adam,
    _adamax,
    _adamaxw,
    _adamw,
    _adan,
    _ademamix,
    _adopt,
    _amsgrad,
    _cocob,
    _fromage,
    _lamb,
    _lars,
    _lion,
    _nadam,
    _nadamw,
    _normalized_sgd,
    _novograd,
    _optimistic_adam,
    _optimistic_adam_v2,
    _optimistic_gradient_descent,
    _polyak_sgd,
    _radam,
    _rmsprop,
    _rprop,
    _sgd,
    _sign_sgd,
    _signum,
    _simplified_ademamix,
    _yogi,
)
from jaxopt_rules.rules._spec import RuleSpec


REGISTRY: tuple[RuleSpec, ...] = (
    _sgd.SPEC,
    _adam.SPEC,
    _adamw.SPEC,
    _rmsprop.SPEC,
    _adagrad.SPEC,
    _lion.SPEC,
    _lamb.SPEC,
    _normalized_sgd.SPEC,
    _simplified_ademamix.SPEC,
    _cocob.SPEC,
    _ademamix.SPEC,
    _acprop.SPEC,
    _polyak_sgd.SPEC,
    _adopt.SPEC,
    _amsgrad.SPEC,
    _signum.SPEC,
    _rprop.SPEC,
    _nadam.SPEC,
    _nadamw.SPEC,
    _adamax.SPEC,
    _adamaxw.SPEC,
    _lars.SPEC,
    _fromage.SPEC,
    _radam.SPEC,
    _adabelief.SPEC,
    _yogi.SPEC,
    _novograd.SPEC,
    _optimistic_gradient_descent.SPEC,
    _optimistic_adam.SPEC,
    _optimistic_adam_v2.SPEC,
    _sign_sgd.SPEC,
    _adan.SPEC,
    _adafactor.SPEC,
)
"""Every rule of the catalog. The test suite runs the conformance kit and the
reference comparison over each entry, so a rule added here is fully checked."""
