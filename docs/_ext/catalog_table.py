"""A mkdocs hook: the catalog's table, generated from ``jaxopt_rules.REGISTRY``.

A page holding the marker ``<!-- catalog-table -->`` gets, in its place, one
table row per registry entry at build time, so the table always lists what the
registry holds:

* the rule, linked to its API entry (``jaxopt_rules.<name>``);
* the reference it is verified against (``spec.reference``), and the
  authors' code where it is another (``spec.authors``, ``more_authors``);
* the paper: the first reference of the factory docstring's ``References:``
  section (authors and venue, with the title when short);
* its state slots, with the condition of a slot that exists only with an
  option, and the storage-dtype argument of one not named ``<slot>_dtype``;
* the bytes of state per float32 parameter, over the registered option sets,
  from ``jax.eval_shape`` of ``init`` (nothing is computed or compiled);
* the options its reference cases exercise (other than ``learning_rate``);
* the conformance checks it passes: every check of
  ``jaxopt_rules.testing.CHECKS``, as registered and with its state quantized
  to 8 and 4 bits, which ``tests/test_conformance.py`` runs on every entry.

:func:`catalog_table` is importable, for the tests.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any


MARKER = "<!-- catalog-table -->"
"""Where the table goes in a page."""

COLUMNS = (
    "rule",
    "reference",
    "paper",
    "state slots",
    "state bytes / parameter",
    "options",
    "checks",
)

# Paper entries read 'Authors, "Title", Venue Year.'
_PAPER = re.compile(
    r'^(?P<authors>[^"]+?),\s*"(?P<title>[^"]+)",?\s*(?P<venue>.*?)\.(?:\s|$)'
)
_YEAR = re.compile(r"\b(?:19|20)\d\d\b")
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")
_LONG_PAPER = 90  # characters; a longer entry drops its title
_LONG_VENUE = 24  # characters; a longer venue is shown as its year


def first_reference(docstring: str | None) -> str:
    """The first paper of a docstring's ``References:`` section, shortened.

    Args:
        docstring: a factory's docstring (Google style).

    Returns:
        ``Authors, "Title", Venue Year`` when that fits in 90 characters, else
        ``Authors, Venue Year`` (``Authors, Year`` for a long venue); the
        section's first sentence if it does not read as a paper; ``""`` with
        no ``References:`` section.

    Example:
        >>> first_reference('''Adam.
        ...
        ...     References:
        ...         Kingma and Ba, "Adam: A Method for Stochastic Optimization",
        ...         ICLR 2015. Verified against ``optax.adam``.
        ... ''')
        'Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015'
    """
    lines = (docstring or "").splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.strip() == "References:"), None
    )
    if start is None:
        return ""
    body: list[str] = []
    for line in lines[start + 1 :]:
        if _SECTION.match(line):
            break
        body.append(line.strip())
    text = " ".join(" ".join(body).split())
    match = _PAPER.match(text)
    if not match:
        return text.split(". ")[0].rstrip(".")
    authors, title, venue = match["authors"], match["title"], match["venue"].rstrip(",")
    full = f'{authors}, "{title}", {venue}'
    if len(full) <= _LONG_PAPER:
        return full
    years = _YEAR.findall(venue)
    if len(venue) > _LONG_VENUE and years:
        return f"{authors}, {years[0]}"
    return f"{authors}, {venue}"


def _bytes_tree() -> Any:
    """The kit's example parameters' structure, with leaves large enough to factor.

    Reference cases may hold weight-decay masks shaped like
    ``testing.example_params()``, so the tree keeps its structure.
    """
    import jax
    import jax.numpy as jnp

    return {
        "conv": [jax.ShapeDtypeStruct((16, 32, 3, 3), jnp.float32)],
        "dense": {
            "b": jax.ShapeDtypeStruct((512,), jnp.float32),
            "w": jax.ShapeDtypeStruct((256, 512), jnp.float32),
        },
        "frozen": None,
        "scale": jax.ShapeDtypeStruct((), jnp.float32),
    }


def state_bytes_per_parameter(spec: Any) -> tuple[float, float]:
    """The least and most bytes of state per float32 parameter over a rule's options.

    Each of ``spec.hyperparams`` and ``spec.cases`` builds the rule;
    ``jax.eval_shape`` of its ``init`` gives the state's shapes and dtypes
    (nothing is computed), and ``jaxopt_rules.tree_bytes`` their size, divided
    by the parameter count of a float32 tree of about 140,000 elements. The
    step count and other scalars add a few millionths.

    Args:
        spec: a registry entry.

    Returns:
        ``(least, most)`` bytes per parameter.
    """
    import jax
    import jax.numpy as jnp

    import jaxopt_rules as jr

    params = _bytes_tree()
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    sizes = []
    for case in (spec.hyperparams, *spec.cases):
        try:
            state = jax.eval_shape(spec.factory(**case).init, zeros)
        except Exception as error:
            raise RuntimeError(
                f"catalog table: {spec.name}({case}).init fails on the example tree"
            ) from error
        sizes.append(jr.tree_bytes(state) / count)
    return min(sizes), max(sizes)


def _number(value: float) -> str:
    # One decimal; two significant digits for factored state (below 0.05 bytes
    # per parameter), which one decimal would show as none.
    return f"{value:.2g}" if 1e-3 < value < 0.05 else f"{value:.1f}"


def _bytes_cell(least: float, most: float) -> str:
    low, high = _number(least), _number(most)
    return low if low == high else f"{low} to {high}"


def _slots_cell(spec: Any) -> str:
    from jaxopt_rules._core._definition import STATE_FIELDS

    definition = getattr(spec.factory, "definition", None)
    if definition is None:  # not made with jr.rule: the state's own fields
        import jax

        state = jax.eval_shape(spec.factory(**spec.hyperparams).init, {"w": 0.0})
        names = [n for n in getattr(state, "_fields", ()) if n not in STATE_FIELDS]
        return ", ".join(f"`{n}`" for n in names) or "none"
    cells = []
    for name, slot in definition.slots:
        notes = []
        if isinstance(slot.when, str):
            notes.append(f"with `{slot.when}`")
        elif slot.when is not None:
            notes.append("optional")
        if slot.dtype_arg not in (None, f"{name}_dtype"):
            notes.append(f"dtype: `{slot.dtype_arg}`")
        cells.append(f"`{name}`" + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(cells) or "none"


def _options(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for case in cases:
        seen.update((key, None) for key in case if key != "learning_rate")
    return list(seen)


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def catalog_rows(registry: Sequence[Any] | None = None) -> list[list[str]]:
    """One row of cells (see ``COLUMNS``) per registry entry, in registry order.

    Args:
        registry: the entries; ``jaxopt_rules.REGISTRY`` by default.

    Returns:
        The rows, each a list of markdown cells.
    """
    import jaxopt_rules as jr
    from jaxopt_rules import testing

    checks = f"all {len(testing.CHECKS)}; 8- and 4-bit state"
    rows = []
    for spec in jr.REGISTRY if registry is None else registry:
        options = _options(spec.cases)
        references = [f"`{spec.reference}`"] if spec.is_drop_in else []
        for _, a in spec.authors_references:  # the authors' code
            references.append(f"`{a.optimizer}` ({a.requirement})")
        reference = "; ".join(references)
        rows.append(
            [
                f"[`{spec.name}`][jaxopt_rules.{spec.name}]",
                reference,
                first_reference(spec.factory.__doc__),
                _slots_cell(spec),
                _bytes_cell(*state_bytes_per_parameter(spec)),
                ", ".join(f"`{o}`" for o in options) or "none",
                checks,
            ]
        )
    return rows


def catalog_table(registry: Sequence[Any] | None = None) -> str:
    """The catalog's markdown table, with the note on its checks column.

    Args:
        registry: the entries; ``jaxopt_rules.REGISTRY`` by default.

    Returns:
        Markdown: a header, one row per entry, then a paragraph saying what
        the columns measure and which test enforces the checks column.
    """
    from jaxopt_rules import testing

    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *(
            "| " + " | ".join(_cell(c) for c in row) + " |"
            for row in catalog_rows(registry)
        ),
    ]
    note = (
        "*State bytes / parameter*: the optimizer state's size divided by the "
        "parameter count, for float32 parameters and default storage dtypes, "
        "over the option sets each rule is tested with (a range where an "
        "option adds a slot); the step count adds a few millionths. "
        f"*Checks*: every rule passes all {len(testing.CHECKS)} checks of "
        "`jaxopt_rules.testing.CHECKS` as registered, and with its state "
        "quantized to 8 and to 4 bits (`jr.quantized_state`); "
        "`tests/test_conformance.py` runs them on every registry entry and "
        "fails on any failed or skipped check. *Options*: the arguments the "
        "comparison sets (with optax's and the authors' code) set besides "
        "`learning_rate`."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """The mkdocs hook: the marker, in a page holding it, becomes the table."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, catalog_table())
