"""Every optimizer and optimizer wrapper of optax 0.2.8 has a drop-in here.

The names are listed by hand (the catalog follows a fixed optax release), and
``test_the_list_is_optax_0_2_8`` checks the list against the installed optax,
so a name missing from the list, or a name optax does not have, fails.

A name is covered when the registry has a drop-in of that name, or when
``WORKS_UNCHANGED`` says why none is needed (a wrapper that takes any
transform, ours included; ``tests/test_optax_wrappers.py`` runs it with the
catalog's rules). Names still being ported are listed in ``PENDING`` and
reported as expected failures (strict: a port that lands must leave the list).
"""

import inspect

import optax
import optax.contrib
import pytest

import jaxopt_rules as jr


ALIAS = (
    "adabelief adadelta adafactor adagrad adam adamax adamaxw adamw adan amsgrad "
    "fromage lamb lars lbfgs lion nadam nadamw noisy_sgd novograd optimistic_adam "
    "optimistic_adam_v2 optimistic_gradient_descent polyak_sgd radam rmsprop rprop "
    "sgd sign_sgd signum sm3 yogi lookahead"
).split()

CONTRIB = (
    "acprop ademamix simplified_ademamix adopt cocob dadapt_adamw dog dowg dpsgd "
    "galore madgrad momo momo_adam muon prodigy schedule_free_adamw "
    "schedule_free_sgd sophia schedule_free sam mechanize reduce_on_plateau"
).split()

# Wrappers of any transform: they take the catalog's rules as they are.
_RUNS = "test_optax_wrappers.py::test_wrapper_follows_optax_trajectory"
WORKS_UNCHANGED: dict[str, str] = {
    "lookahead": f"wraps any transform; {_RUNS}[lookahead*]",
    "schedule_free": f"wraps any transform; {_RUNS}[schedule_free-*]",
    "sam": f"wraps any outer and adversarial transforms; {_RUNS}[sam*]",
    "mechanize": f"wraps any transform; {_RUNS}[mechanize-*]",
    "reduce_on_plateau": f"chained after any transform; {_RUNS}[reduce_on_plateau-*]",
}

PENDING: set[str] = set()


def _optax_function(name: str):
    return getattr(optax.contrib if name in CONTRIB else optax, name)


def test_the_list_is_optax_0_2_8():
    assert optax.__version__ == "0.2.8"
    for name in ALIAS + CONTRIB:
        assert callable(_optax_function(name)), name
    # Every optimizer optax's alias module defines is listed.
    from optax._src import alias

    defined = {
        n
        for n, f in vars(alias).items()
        if inspect.isfunction(f) and f.__module__ == alias.__name__ and n[0] != "_"
    }
    assert defined <= set(ALIAS)
    # Every optimizer of optax.contrib (a public function taking a learning
    # rate, less the scale_by_* building blocks) is listed.
    takes_a_learning_rate = {
        n
        for n, f in vars(optax.contrib).items()
        if inspect.isfunction(f)
        and n[0] != "_"
        and not n.startswith("scale_by_")
        and "learning_rate" in inspect.signature(f).parameters
    }
    assert takes_a_learning_rate <= set(CONTRIB)


def test_every_registered_optax_drop_in_is_listed():
    """A rule verified against ``optax.<name>`` or ``optax.contrib.<name>``
    is one of the names above (so the list cannot lose a name unnoticed)."""
    for spec in jr.REGISTRY:
        module, _, name = spec.reference.rpartition(".")
        if module in ("optax", "optax.contrib") and name == spec.name:
            listed = ALIAS if module == "optax" else CONTRIB
            assert spec.name in listed, spec.name


def test_pending_and_unchanged_are_optax_names():
    assert PENDING <= set(ALIAS + CONTRIB)
    assert set(WORKS_UNCHANGED) <= set(ALIAS + CONTRIB)
    assert not PENDING & set(WORKS_UNCHANGED)


def _params(names: list[str]) -> list:
    return [
        pytest.param(
            n,
            id=n,
            marks=[pytest.mark.xfail(reason="not ported yet", strict=True)]
            if n in PENDING
            else [],
        )
        for n in names
    ]


@pytest.mark.parametrize("name", _params(ALIAS + CONTRIB))
def test_optax_name_has_a_drop_in(name):
    registered = {spec.name for spec in jr.REGISTRY}
    assert name in registered or name in WORKS_UNCHANGED, (
        f"optax's {name} has no drop-in in jaxopt_rules.REGISTRY"
    )
