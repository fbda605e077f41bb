"""Wrappers around any optax transform: :func:`flat_leaves`, :func:`cautious`.

Step logging (``log_step`` and its sinks) is :mod:`jaxopt_rules.logging`.
"""

from jaxopt_rules.wrappers._cautious import cautious as cautious
from jaxopt_rules.wrappers._flat import (
    FlatState as FlatState,
    flat_leaves as flat_leaves,
)
