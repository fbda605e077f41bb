"""Delivering step records to sinks off the training thread, in order, safely."""

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from jaxopt_rules.wrappers._sinks import Record, as_sink


_LOG = logging.getLogger("jaxopt_rules")
_STOP = object()


class Dispatcher:
    """A queue and one daemon thread that hands each record to every sink.

    Records are delivered in the order they were submitted (one thread, FIFO).
    ``submit`` never blocks on a sink and never raises because of one: a sink
    that raises is logged on the ``"jaxopt_rules"`` logger and the next sinks
    and records still get delivered. ``flush`` waits until everything
    submitted so far is delivered and flushes the sinks; ``close`` does that,
    closes the sinks and stops the thread. It is a context manager.

    Args:
        sinks: callables taking one record, or paths (``.jsonl``, ``.csv``).

    Example:
        >>> from jaxopt_rules.wrappers import Dispatcher
        >>> seen = []
        >>> with Dispatcher([seen.append]) as d:
        ...     d.submit({"step": 1})
        ...     d.submit({"step": 2})
        >>> [r["step"] for r in seen]
        [1, 2]
    """

    def __init__(self, sinks: Iterable[Callable[[Record], None] | str]) -> None:
        self.sinks = [as_sink(s) for s in sinks]
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="jaxopt_rules-log", daemon=True
        )
        self._thread.start()

    def submit(self, record: Record) -> None:
        """Queues a record for delivery (dropped with a warning after close)."""
        if self._closed:
            _LOG.warning("record submitted after close() was dropped: %s", record)
            return
        self._queue.put(record)

    def flush(self) -> None:
        """Waits until every record submitted so far is delivered; flushes sinks."""
        if self._closed:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def close(self) -> None:
        """Delivers what is queued, closes the sinks, stops the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self.flush()
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        for sink in self.sinks:
            self._call(getattr(sink, "close", None))

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            _LOG.exception("jaxopt_rules: sink %r failed; training continues", fn)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                for sink in self.sinks:
                    self._call(getattr(sink, "flush", None))
                item.set()
                continue
            for sink in self.sinks:
                self._call(sink, item)
