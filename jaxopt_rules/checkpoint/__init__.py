"""Checkpoints across optimizers: optax states ⇄ this package's, raw restores.

* :func:`from_optax` / :func:`to_optax`: continue a run checkpointed with an
  optax optimizer on its drop-in, and back (states matched by field name).
* :func:`restore_state`: rebuild a state from a checkpoint restored without a
  target (nested dicts and lists), leaf by leaf by name.
"""

from jaxopt_rules.checkpoint._optax import (
    from_optax as from_optax,
    to_optax as to_optax,
)
from jaxopt_rules.checkpoint._restore import restore_state as restore_state
