"""The conformance checks, grouped by theme, and their registry :data:`CHECKS`.

Each check takes a :class:`~jaxopt_rules.testing.RuleUnderTest` and raises
:class:`~jaxopt_rules.testing.ConformanceError`, naming the check and the leaf
path, when the rule falls short, or ``CheckSkipped`` (with the reason and how to
make it run) when it does not apply. The checks only use the optax protocol,
so they apply to any factory of ``optax.GradientTransformation``.
"""

from collections.abc import Callable, Mapping

from jaxopt_rules.testing._checks.composition import (
    check_apply_if_finite,
    check_chain,
    check_extra_args,
    check_masked,
    check_multi_steps,
    check_partition,
)
from jaxopt_rules.testing._checks.convergence import (
    check_converges_parabola,
    check_converges_rosenbrock,
)
from jaxopt_rules.testing._checks.hyperparams import (
    check_inject_hyperparams,
    check_schedule,
)
from jaxopt_rules.testing._checks.inputs import (
    check_complex_params,
    check_names_bad_leaves,
)
from jaxopt_rules.testing._checks.sharding import check_sharding
from jaxopt_rules.testing._checks.structure import (
    check_cond_state_types,
    check_init_abstract,
    check_no_recompile,
    check_structure_and_dtypes,
    check_tree_map_params,
)
from jaxopt_rules.testing._checks.transforms import (
    check_jit_matches_eager,
    check_scan,
    check_vmap,
)
from jaxopt_rules.testing._subject import RuleUnderTest


CHECKS: Mapping[str, Callable[[RuleUnderTest], None]] = {
    "structure_and_dtypes": check_structure_and_dtypes,
    "jit_matches_eager": check_jit_matches_eager,
    "no_recompile": check_no_recompile,
    "cond_state_types": check_cond_state_types,
    "chain": check_chain,
    "masked": check_masked,
    "partition": check_partition,
    "multi_steps": check_multi_steps,
    "apply_if_finite": check_apply_if_finite,
    "inject_hyperparams": check_inject_hyperparams,
    "extra_args": check_extra_args,
    "init_abstract": check_init_abstract,
    "tree_map_params": check_tree_map_params,
    "vmap": check_vmap,
    "scan": check_scan,
    "schedule": check_schedule,
    "converges_parabola": check_converges_parabola,
    "converges_rosenbrock": check_converges_rosenbrock,
    "sharding": check_sharding,
    "names_bad_leaves": check_names_bad_leaves,
    "complex_params": check_complex_params,
}
"""The 21 conformance checks by name, in the order :func:`check_rule` runs them."""
