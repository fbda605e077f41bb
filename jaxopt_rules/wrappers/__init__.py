"""Wrappers around any optax transform, and the sinks that step records go to."""

from jaxopt_rules.wrappers._dispatch import Dispatcher as Dispatcher
from jaxopt_rules.wrappers._flat import (
    FlatState as FlatState,
    flat_leaves as flat_leaves,
)
from jaxopt_rules.wrappers._logging import (
    LoggedTransformation as LoggedTransformation,
    LogStepState as LogStepState,
    log_step as log_step,
)
from jaxopt_rules.wrappers._sinks import (
    CsvSink as CsvSink,
    JsonLinesSink as JsonLinesSink,
    LoggingSink as LoggingSink,
    Sink as Sink,
    TensorBoardSink as TensorBoardSink,
)
