"""A griffe extension: ``Example:`` docstring sections render as examples.

The package's docstrings head their doctests ``Example:`` (Google style allows
both spellings); griffe's Google parser knows only ``Examples:`` and would
render the doctest as prose. This renames the heading before parsing.
"""

import re
from typing import Any

import griffe


_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames ``Example:`` section headings to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites the docstring of every object as it is loaded."""
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
