"""Where step records go: Python logging, JSON lines, CSV, TensorBoard, any callable.

A record is a flat dict: ``{"step": 300, "grad_norm": 0.12, ...,
"grad_norm/decoder/w": 0.11, "nonfinite": ["decoder/w"]}`` (per-leaf keys are
``statistic/leaf/path``). A sink is any callable taking one record; the
classes here add ``flush`` and ``close``, which the dispatcher calls. Each
sink receives its own copy of each record, so a sink may modify it.

Files, one policy: :class:`JsonLinesSink` and :class:`CsvSink` append to an
existing file (a resumed run continues its log; nothing is overwritten) unless
given ``append=False``, which starts the file empty. Each record is written
and flushed to the operating system as soon as it is delivered, so another
reader (``tail -f``, a notebook plotting the file) sees it during training.
:class:`TensorBoardSink` likewise adds to its folder: each writer adds its own
event file, and TensorBoard shows every event file of a folder.
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
"""A step record: a flat mapping from field names to numbers, bools or lists."""


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
    """Writes each record as one JSON object per line, readable at once.

    Non-finite numbers are written as the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` (JSON has no literal for them). Each line is flushed as soon
    as it is written, so the file is complete up to the last delivered
    record. The flush costs one ``write`` system call per record, about
    15 us on CPU, on the delivery thread (not the training thread): small
    beside a logged step that reports at ``every=1`` (about 1.5 ms for a
    small jitted step on CPU, where the host callback dominates).

    Args:
        path: the file; created (with its folder) if missing.
        append: add to an existing file (the default); ``False`` starts it
            empty.

    Example:
        >>> import json, pathlib, tempfile
        >>> import jaxopt_rules as jr
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "steps.jsonl"
        >>> sink = jr.JsonLinesSink(path)
        >>> sink({"step": 0, "grad_norm/l1/w": 0.5})
        >>> json.loads(path.read_text())  # there before close()
        {'step': 0, 'grad_norm/l1/w': 0.5}
        >>> sink.close()
    """

    def __init__(self, path: str | pathlib.Path, *, append: bool = True):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")

    def __call__(self, record: Record) -> None:
        """Writes one line and flushes it."""
        line = json.dumps({k: _json_safe(v) for k, v in record.items()})
        self._file.write(line + "\n")
        self._file.flush()

    def flush(self) -> None:
        """Flushes the file."""
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


class CsvSink:
    """Writes records as CSV rows, readable at once; the header fixes the columns.

    The columns are those of the file's existing header when appending to a
    non-empty file, else the first record's keys (written as the header).
    Later keys that are not columns are ignored; missing ones are left empty.
    List values (non-finite leaf paths) are joined with ``;``. Each row is
    flushed as soon as it is written, like :class:`JsonLinesSink`.

    Args:
        path: the file; created (with its folder) if missing.
        append: add rows to an existing file (the default); ``False`` starts
            it empty.

    Example:
        >>> import pathlib, tempfile
        >>> import jaxopt_rules as jr
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "steps.csv"
        >>> sink = jr.CsvSink(path)
        >>> sink({"step": 0, "grad_norm/l1/w": 0.5})
        >>> path.read_text().splitlines()
        ['step,grad_norm/l1/w', '0,0.5']
        >>> sink.close()
    """

    def __init__(self, path: str | pathlib.Path, *, append: bool = True):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = _existing_header(self.path) if append else None
        self._file = self.path.open(
            "a" if append else "w", encoding="utf-8", newline=""
        )
        self._writer: csv.DictWriter[str] | None = None
        if header:
            self._writer = self._make_writer(header)

    def _make_writer(self, fieldnames: list[str]) -> "csv.DictWriter[str]":
        return csv.DictWriter(self._file, fieldnames=fieldnames, extrasaction="ignore")

    def __call__(self, record: Record) -> None:
        """Writes one row (and the header before the first) and flushes it."""
        if self._writer is None:
            self._writer = self._make_writer(list(record))
            self._writer.writeheader()
        row = {
            k: ";".join(map(str, v)) if isinstance(v, list | tuple) else v
            for k, v in record.items()
        }
        self._writer.writerow(row)
        self._file.flush()

    def flush(self) -> None:
        """Flushes the file."""
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


def _existing_header(path: pathlib.Path) -> list[str] | None:
    """The column names of a CSV file's first line, or None if it has none."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as file:
        return next(csv.reader(file), None) or None


class TensorBoardSink:
    """Writes the numeric fields of each record as TensorBoard scalars.

    Needs ``tensorboardX`` (``pip install tensorboardX``). Each numeric key
    becomes a tag; ``step`` is the global step; lists (non-finite leaf paths)
    are written as text. Per-leaf keys (``grad_norm/l1/w``) are tags that
    TensorBoard groups by their first part: one section per statistic, one
    chart per leaf. Each sink adds a new event file to ``logdir`` and
    TensorBoard shows all of them: use a fresh folder per run to keep runs
    apart.

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
