"""The catalog's registry: every rule's entry, in the catalog's order.

Each rule's module defines its entry (``SPEC``, a :class:`RuleSpec`) next to
its definition; a rule added to the catalog is one module here and one line
below.
"""

from jaxopt_rules.rules import (
    _adagrad,
    _adam,
    _adamw,
    _lamb,
    _lion,
    _normalized_sgd,
    _rmsprop,
    _sgd,
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
)
"""Every rule of the catalog. The test suite runs the conformance kit and the
reference comparison over each entry, so a rule added here is fully checked."""
