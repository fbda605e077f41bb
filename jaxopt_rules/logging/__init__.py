"""Step logging: :func:`log_step`, the sinks its records go to, and their delivery.

- :func:`log_step` wraps any optax transform; on device it computes global
  norms, ``nonfinite`` leaves, per-leaf norms, custom statistics and what
  rules :func:`~jaxopt_rules.report`, and hands them to the host with one
  ``jax.debug.callback`` per reporting step.
- A :class:`Dispatcher` delivers each record to every sink on one thread, in
  order; the :class:`StepLogger` that is the transform's ``update`` owns it.
- Sinks: :class:`LoggingSink` (the default), :class:`JsonLinesSink`,
  :class:`CsvSink`, :class:`TensorBoardSink`, or any callable.

Records are flat dicts; per-leaf values are keyed ``statistic/leaf/path``
(:data:`SEPARATOR`, :func:`path_name`).
"""

from jaxopt_rules.logging._dispatch import Dispatcher as Dispatcher
from jaxopt_rules.logging._log_step import (
    DEFAULT_STATS as DEFAULT_STATS,
    RESERVED_FIELDS as RESERVED_FIELDS,
    LoggedTransformation as LoggedTransformation,
    LogStepState as LogStepState,
    StatFn as StatFn,
    StepLogger as StepLogger,
    log_step as log_step,
)
from jaxopt_rules.logging._records import (
    SEPARATOR as SEPARATOR,
    path_name as path_name,
)
from jaxopt_rules.logging._sinks import (
    CsvSink as CsvSink,
    JsonLinesSink as JsonLinesSink,
    LoggingSink as LoggingSink,
    Record as Record,
    Sink as Sink,
    TensorBoardSink as TensorBoardSink,
)
