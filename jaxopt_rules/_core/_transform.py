"""A bound rule configuration as an ``optax.GradientTransformationExtraArgs``."""

import optax

from jaxopt_rules._core._config import RuleConfig
from jaxopt_rules._core._init import make_init
from jaxopt_rules._core._state import state_class
from jaxopt_rules._core._update import make_update


def build_transform(config: RuleConfig) -> optax.GradientTransformationExtraArgs:
    """The optax transform for one bound configuration of a rule.

    Its state is a NamedTuple ``<Name>State(count, *active slots[, rng_key][,
    rounding_key])``, the same class for every configuration with the same
    active slots (see ``_state.py``).
    """
    definition = config.definition
    extra = ("rng_key",) if definition.takes_key else ()
    if config.stochastic_rounding:
        extra += ("rounding_key",)
    state_cls = state_class(
        definition.name,
        config.active_slots,
        definition.slot_names,
        extra,
        owner=definition.fn.__module__,
    )
    return optax.GradientTransformationExtraArgs(
        make_init(config, state_cls), make_update(config, state_cls)
    )
