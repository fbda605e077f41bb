"""The public API: ``__all__`` lists every public name, and each is documented."""

import inspect
import types

import jaxopt_rules as jr


def test_all_lists_every_public_name_and_nothing_else():
    public = {n for n in dir(jr) if not n.startswith("_")}
    assert set(jr.__all__) - {"__version__"} == public
    assert len(jr.__all__) == len(set(jr.__all__))


def test_every_public_object_has_a_docstring_of_its_own():
    undocumented = []
    for name in jr.__all__:
        obj = getattr(jr, name)
        if name in ("__version__", "Array", "Scalar", "REGISTRY"):
            continue  # a string, type aliases and a tuple: documented in the docs
        if isinstance(obj, types.ModuleType | type) or callable(obj):
            doc = inspect.getdoc(obj) or ""
            if len(doc.split()) < 4:
                undocumented.append(name)
    assert not undocumented, undocumented


def test_star_import_gives_the_public_api():
    namespace: dict[str, object] = {}
    exec("from jaxopt_rules import *", namespace)
    assert {"adam", "rule", "log_step", "testing", "quantized_state"} <= set(namespace)
