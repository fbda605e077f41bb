"""Tree helpers of the checks: parts of the example tree and their comparison."""

from typing import Any

import jax

from jaxopt_rules.testing._compare import assert_trees_close
from jaxopt_rules.testing._subject import ATOL, RTOL


SELECTED = {"['dense']['w']", "['conv'][0]"}
"""The example tree split in two: the leaves given to the rule..."""

OTHERS = {"['dense']['b']", "['scale']"}
"""...and the others (passed through, or given to another transform)."""


def only(tree: Any, paths: set[str]) -> Any:
    """``tree`` with every leaf not at one of ``paths`` replaced by ``None``."""
    return jax.tree.map_with_path(
        lambda path, x: x if jax.tree_util.keystr(path) in paths else None, tree
    )


def pick(tree: Any, paths: set[str]) -> dict[str, Any]:
    """The leaves of ``tree`` at ``paths``, keyed by path."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(p): x
        for p, x in leaves
        if jax.tree_util.keystr(p) in paths
    }


def assert_parts(
    check: str,
    what: str,
    got: Any,
    want_selected: Any,
    want_others: Any,
    *,
    other_rtol: float,
) -> None:
    """Compares the selected leaves and the other leaves of ``got`` separately."""
    assert_trees_close(
        check,
        f"{what} (rule leaves)",
        pick(got, SELECTED),
        pick(want_selected, SELECTED),
        rtol=RTOL,
        atol=ATOL,
    )
    assert_trees_close(
        check,
        f"{what} (other leaves)",
        pick(got, OTHERS),
        pick(want_others, OTHERS),
        rtol=other_rtol,
        atol=ATOL if other_rtol else 0.0,
    )


def assert_steps_close(
    check: str, what: str, got: list[Any], want: list[Any], *, state: bool = False
) -> None:
    """Compares two trajectories ``[(updates, state, params)]`` step by step."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_trees_close(
            check, f"{what}step {i + 1} updates", g[0], w[0], rtol=RTOL, atol=ATOL
        )
        if state:
            assert_trees_close(
                check, f"{what}step {i + 1} state", g[1], w[1], rtol=RTOL, atol=ATOL
            )
