"""A griffe extension: the package's docstrings and factories as readers see them.

The docstrings are read by Python's ``help`` as well as by this site, so they
keep three reStructuredText habits that Markdown renders badly; this rewrites
them as each object is loaded, before griffe parses the docstring:

* ``Example:`` section headings become ``Examples:`` (griffe's Google parser
  knows only the plural, and would render the doctest as prose);
* roles such as :func:`~jaxopt_rules.report` become code spans;
* a paragraph ending in ``::`` (a literal block follows) ends in ``:``.

A rule written with ``jaxopt_rules.rule`` is, at run time, a
``jaxopt_rules.RuleFactory`` whose signature (the hyperparameters, then the
storage-dtype and rounding arguments) differs from the per-leaf function's in
the source. Its documented signature is the factory's.
"""

import importlib
import inspect
import re
from typing import Any

import griffe


_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|obj|exc):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::[ \t]*$", flags=re.MULTILINE)
_TRANSFORM = "optax.GradientTransformationExtraArgs"


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def to_markdown(text: str) -> str:
    """Rewrites one docstring's reStructuredText habits as Markdown."""
    text = _HEADING.sub(r"\1Examples:", text)
    text = _ROLE.sub(_role, text)
    return _LITERAL.sub(r"\1:", text)


def _runtime_object(obj: griffe.Object) -> Any:
    try:
        module = importlib.import_module(obj.module.path)
    except Exception:  # a module that cannot be imported keeps its source view
        return None
    return getattr(module, obj.name, None)


def _annotation(parameter: inspect.Parameter) -> str | None:
    import optax

    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    if annotation == optax.ScalarOrSchedule:
        return "optax.ScalarOrSchedule"
    if isinstance(annotation, type):
        return annotation.__qualname__
    return None


def factory_parameters(signature: inspect.Signature) -> griffe.Parameters:
    """A factory's signature as griffe parameters (annotations shortened)."""
    return griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                annotation=_annotation(p),
                kind=griffe.ParameterKind(p.kind.description),
                default=None
                if p.default is inspect.Parameter.empty
                else repr(p.default),
            )
            for p in signature.parameters.values()
        )
    )


class ExampleSections(griffe.Extension):
    """Markdown docstrings, and factory signatures for rules made with ``rule``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites the docstring of every object as it is loaded."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        """Gives a rule factory its factory's signature."""
        if not func.decorators:
            return
        runtime = _runtime_object(func)
        import jaxopt_rules

        if isinstance(runtime, jaxopt_rules.RuleFactory):
            func.parameters = factory_parameters(inspect.signature(runtime))
            func.returns = _TRANSFORM
