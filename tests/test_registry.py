"""The registry lists every exported rule, and each is a documented optax drop-in."""

import inspect

import optax
import optax.contrib
import pytest

import jaxopt_rules as jr
from jaxopt_rules import rules


def _exported_rule_factories() -> set[str]:
    """Public callables of ``jaxopt_rules.rules`` other than the registry types."""
    return {
        name
        for name in dir(rules)
        if not name.startswith("_")
        and callable(getattr(rules, name))
        and not isinstance(getattr(rules, name), type)
    }


def test_every_exported_rule_is_registered():
    registered = {spec.name for spec in jr.REGISTRY}
    assert _exported_rule_factories() == registered


def test_registered_rules_are_exported_at_top_level():
    for spec in jr.REGISTRY:
        assert getattr(jr, spec.name) is spec.factory
        assert getattr(rules, spec.name) is spec.factory


def test_registry_names_are_unique():
    names = [spec.name for spec in jr.REGISTRY]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("spec", jr.REGISTRY, ids=lambda s: s.name)
def test_spec_is_complete(spec):
    assert spec.factory.__name__ == spec.name
    assert spec.is_drop_in or spec.authors is not None
    if spec.is_drop_in:
        assert spec.reference
        assert callable(spec.reference_factory)
        assert spec.reference_cases
    assert isinstance(spec.factory(**spec.hyperparams), optax.GradientTransformation)


@pytest.mark.parametrize("spec", jr.REGISTRY, ids=lambda s: s.name)
def test_docstring_sections(spec):
    doc = inspect.getdoc(spec.factory) or ""
    for section in ("Update::", "Args:", "Returns:", "Example:", "References:"):
        assert section in doc, f"{spec.name} docstring lacks {section}"
    assert "Verified against" in doc
    documented = doc.split("Args:")[1].split("Returns:")[0]
    for name in inspect.signature(spec.factory).parameters:
        assert f"{name}:" in documented, f"{spec.name}: argument {name} undocumented"


def _optax_namesake(spec):
    """The optax function the entry is a drop-in for (in optax or optax.contrib)."""
    for module in (optax, optax.contrib):
        if spec.reference == f"{module.__name__}.{spec.name}":
            return getattr(module, spec.name)
    return None


@pytest.mark.parametrize(
    "spec",
    [s for s in jr.REGISTRY if _optax_namesake(s) is not None],
    ids=lambda s: s.name,
)
def test_drop_in_signature(spec):
    """Same argument names, order, kinds and defaults as the optax function."""
    ours = inspect.signature(spec.factory).parameters
    theirs = inspect.signature(_optax_namesake(spec)).parameters
    for (name, theirs_p), ours_name in zip(theirs.items(), ours, strict=False):
        assert name == ours_name, f"{spec.name}: argument order differs at {name}"
        assert ours[name].kind == theirs_p.kind, f"{spec.name}.{name} kind"
        if isinstance(theirs_p.default, optax.GradientTransformation):
            # A transform as default (sophia's Hessian estimator): the
            # drop-in's own, checked against optax's in its rule's tests.
            assert isinstance(ours[name].default, optax.GradientTransformation)
            continue
        assert ours[name].default == theirs_p.default, f"{spec.name}.{name} default"
    assert set(theirs) <= set(ours)
    extras = set(ours) - set(theirs)
    assert all(ours[e].kind is inspect.Parameter.KEYWORD_ONLY for e in extras)
