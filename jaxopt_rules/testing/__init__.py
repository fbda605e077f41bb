"""The conformance kit: check any optimizer rule with one call from pytest.

:func:`check_rule` runs the 21 checks of :data:`CHECKS` (types, jit against
eager, optax's wrappers, vmap, scan, schedules, convergence, sharding, bad and
complex input) and returns a :class:`KitReport` of what ran and what did not.

Example::

    from jaxopt_rules import testing

    def test_my_rule():
        testing.check_rule(my_rule, {"learning_rate": 1e-2})

or, one test per check (slower: the checks then share no compiled program)::

    @pytest.mark.parametrize("check", testing.CHECKS)
    def test_my_rule(check):
        testing.run_check(check, my_rule, {"learning_rate": 1e-2})

The sharding check needs several devices: set
``jax.config.update("jax_num_cpu_devices", 8)`` before JAX first runs (in a
``conftest.py``); with one device it is reported as not run.
"""

from jaxopt_rules.testing._checks import CHECKS as CHECKS
from jaxopt_rules.testing._compare import (
    ConformanceError as ConformanceError,
    assert_trees_close as assert_trees_close,
)
from jaxopt_rules.testing._problems import (
    example_grads as example_grads,
    example_loss as example_loss,
    example_params as example_params,
    parabola as parabola,
    rosenbrock as rosenbrock,
)
from jaxopt_rules.testing._reference import (
    free_run as free_run,
    free_running_error as free_running_error,
    reference_arguments as reference_arguments,
    relative_error as relative_error,
    teacher_forced_errors as teacher_forced_errors,
)
from jaxopt_rules.testing._runner import (
    KitReport as KitReport,
    check_rule as check_rule,
    run_check as run_check,
)
from jaxopt_rules.testing._subject import (
    CheckSkipped as CheckSkipped,
    RuleUnderTest as RuleUnderTest,
)
from jaxopt_rules.testing._update_args import (
    as_per_example as as_per_example,
    example_batch as example_batch,
    fed_plain_gradients as fed_plain_gradients,
    loss_functions as loss_functions,
    takes_per_example as takes_per_example,
    with_update_args as with_update_args,
)
