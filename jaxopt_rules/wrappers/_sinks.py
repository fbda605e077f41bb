"""Where step records go: Python logging, JSON lines, CSV, TensorBoard, any callable.

A record is a flat dict: ``{"step": 300, "grad_norm": 0.12, ...,
"nonfinite": ["['decoder']['w']"]}``. A sink is any callable taking one record;
the classes here add ``flush`` and ``close``, which the dispatcher calls. Each
sink receives its own copy of each record, so a sink may modify it.
"""

import csv
import json
import logging
import math
import pathlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable


Record = Mapping[str, Any]


@runtime_checkable
class Sink(Protocol):
    """Anything that takes a record; ``flush``/``close`` are optional."""

    def __call__(self, record: Record) -> None:
        """Delivers one record."""
        ...


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


_HINTED: set[str] = set()
_HINT_LOCK = threading.Lock()


def _hint_disabled(logger: logging.Logger, level: int) -> None:
    """Says once per logger that its level drops the records sent to it."""
    with _HINT_LOCK:
        if logger.name in _HINTED:
            return
        _HINTED.add(logger.name)
    logging.getLogger("jaxopt_rules").warning(
        "jaxopt_rules: step records go to the logger %r at level %s, which "
        "drops them (Python's default level is WARNING). To see them, call "
        "logging.basicConfig(level=logging.INFO), or give log_step sinks, e.g. "
        "sinks=['steps.jsonl'] or sinks=[print]. This is said once.",
        logger.name,
        logging.getLevelName(level),
    )


class LoggingSink:
    """Writes each record as one line to a Python logger.

    The default sink of :func:`~jaxopt_rules.log_step`. Records are logged at
    ``INFO``, which Python drops unless logging is configured: the first
    record that the logger drops triggers a one-time ``WARNING`` on the
    ``"jaxopt_rules"`` logger saying how to see them
    (``logging.basicConfig(level=logging.INFO)``, or other sinks).

    Args:
        logger: the logger (default: ``logging.getLogger("jaxopt_rules.steps")``).
        level: the level of the lines.

    Example:
        >>> import jaxopt_rules as jr
        >>> sink = jr.LoggingSink()
        >>> sink({"step": 3, "grad_norm": 0.5})
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO):
        self.logger = logger or logging.getLogger("jaxopt_rules.steps")
        self.level = level

    def __call__(self, record: Record) -> None:
        """Logs ``step=3 grad_norm=0.5 ...``."""
        if not self.logger.isEnabledFor(self.level):
            _hint_disabled(self.logger, self.level)
            return
        text = " ".join(f"{k}={_format_value(v)}" for k, v in record.items())
        self.logger.log(self.level, text)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class JsonLinesSink:
    """Appends each record as one JSON object per line.

    Non-finite numbers are written as the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (JSON has no literal for them).

    Args:
        path: the file; created (with its folder) if missing, appended to.
    """

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def __call__(self, record: Record) -> None:
        """Writes one line."""
        self._file.write(
            json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n"
        )

    def flush(self) -> None:
        """Flushes the file."""
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


class CsvSink:
    """Writes records as CSV rows; the first record's keys fix the columns.

    Later keys that were not in the first record are ignored; missing ones are
    left empty. List values (non-finite leaf paths) are joined with ``;``.

    Args:
        path: the file; created (with its folder), overwritten.
    """

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8", newline="")
        self._writer: csv.DictWriter[str] | None = None

    def __call__(self, record: Record) -> None:
        """Writes one row (and the header before the first)."""
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=list(record), extrasaction="ignore"
            )
            self._writer.writeheader()
        row = {
            k: ";".join(map(str, v)) if isinstance(v, list | tuple) else v
            for k, v in record.items()
        }
        self._writer.writerow(row)

    def flush(self) -> None:
        """Flushes the file."""
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


class TensorBoardSink:
    """Writes the numeric fields of each record as TensorBoard scalars.

    Needs ``tensorboardX`` (``pip install tensorboardX``). Each numeric key
    becomes a tag; ``step`` is the global step; lists (non-finite leaf paths)
    are written as text.

    Args:
        logdir: the run folder.
        **kwargs: passed to ``tensorboardX.SummaryWriter``.
    """

    def __init__(self, logdir: str | pathlib.Path, **kwargs: Any):
        try:
            from tensorboardX import SummaryWriter  # pyright: ignore[reportMissingImports]
        except ImportError as error:
            raise ImportError(
                "TensorBoardSink needs tensorboardX: pip install tensorboardX"
            ) from error
        self._writer = SummaryWriter(str(logdir), **kwargs)

    def __call__(self, record: Record) -> None:
        """Adds one scalar per numeric field."""
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key == "step":
                continue
            if isinstance(value, bool | int | float):
                self._writer.add_scalar(key, value, global_step=step)
            elif isinstance(value, list | tuple) and value:
                self._writer.add_text(key, ", ".join(map(str, value)), global_step=step)

    def flush(self) -> None:
        """Flushes the event file."""
        self._writer.flush()

    def close(self) -> None:
        """Closes the event file."""
        self._writer.close()


def as_sink(
    sink: Callable[[Record], None] | str | pathlib.Path,
) -> Callable[[Record], None]:
    """A sink from a callable, or from a path (``.jsonl``/``.json`` or ``.csv``)."""
    if isinstance(sink, str | pathlib.Path):
        suffix = pathlib.Path(sink).suffix
        if suffix in (".jsonl", ".json"):
            return JsonLinesSink(sink)
        if suffix == ".csv":
            return CsvSink(sink)
        raise ValueError(
            f"cannot tell the format of {str(sink)!r}: use a .jsonl or .csv path, "
            "or pass a sink object or callable"
        )
    if not callable(sink):
        raise TypeError(f"a sink must be callable or a path, got {type(sink).__name__}")
    return sink
