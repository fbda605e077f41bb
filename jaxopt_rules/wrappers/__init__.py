"""Wrappers around any optax transform: the leaf layout."""

from jaxopt_rules.wrappers._flat import (
    FlatState as FlatState,
    flat_leaves as flat_leaves,
)
