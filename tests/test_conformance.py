"""The conformance kit over every registered rule and the custom-rule example.

A rule added to ``jaxopt_rules.REGISTRY`` is checked here with no new test code.
"""

import pytest
from helpers import rules_under_test

from jaxopt_rules import testing


RULES = rules_under_test()


@pytest.mark.parametrize("check", list(testing.CHECKS))
@pytest.mark.parametrize(
    ("name", "factory", "hyperparams", "options"),
    RULES,
    ids=[name for name, *_ in RULES],
)
def test_conformance(name, factory, hyperparams, options, check):
    ran = testing.run_check(check, factory, hyperparams, **options)
    # With the 8 virtual devices of conftest.py, and a numeric learning rate in
    # every registered rule's test hyperparameters, every check applies.
    assert ran, f"check {check!r} did not run for {name}"
