"""The rule-authoring core (private; the public names are re-exported at top level)."""

from jaxopt_rules._core._catalog import CatalogSpec as CatalogSpec
from jaxopt_rules._core._composite import (
    CompositeFactory as CompositeFactory,
    composite as composite,
    init_with_last_field as init_with_last_field,
    split_last_field as split_last_field,
)
from jaxopt_rules._core._config import RuleConfig as RuleConfig
from jaxopt_rules._core._constraints import (
    Constraint as Constraint,
    checked_scalar_or_schedule as checked_scalar_or_schedule,
    parse_constraint as parse_constraint,
)
from jaxopt_rules._core._definition import (
    RESERVED as RESERVED,
    RuleDefinition as RuleDefinition,
    Slot as Slot,
)
from jaxopt_rules._core._factory import (
    PublicSignature as PublicSignature,
    RuleFactory as RuleFactory,
    rule as rule,
)
from jaxopt_rules._core._leaves import (
    lowest_float as lowest_float,
    real_dtype as real_dtype,
)
from jaxopt_rules._core._math import abs_sq as abs_sq
from jaxopt_rules._core._random import (
    KeySplit as KeySplit,
    initial_key as initial_key,
    random_like as random_like,
    split_then_per_leaf as split_then_per_leaf,
    split_with_leaves as split_with_leaves,
)
from jaxopt_rules._core._report import collecting as collecting, report as report
from jaxopt_rules._core._rounding import (
    element_bits as element_bits,
    round_to_bf16 as round_to_bf16,
    stochastic_round_bf16 as stochastic_round_bf16,
)
from jaxopt_rules._core._sharding import (
    each_matrix as each_matrix,
    replicated as replicated,
    sharded_like as sharded_like,
    spread as spread,
    stacked_like as stacked_like,
    whole_matrices as whole_matrices,
)
from jaxopt_rules._core._state import (
    safe_increment as safe_increment,
    state_class as state_class,
)
from jaxopt_rules._core._transform import build_transform as build_transform
from jaxopt_rules._core._tree import (
    describe_mismatch as describe_mismatch,
    fill_like as fill_like,
    is_hole as is_hole,
)
from jaxopt_rules._core._types import Array as Array, Scalar as Scalar
