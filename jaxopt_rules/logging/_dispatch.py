"""Delivering step records to sinks off the training thread, in order, safely.

Guarantees (tested in ``tests/test_sinks.py`` and ``tests/test_log_faults.py``):

- order: one delivery thread per dispatcher, first in first out;
- isolation: each sink receives its own deep copy of each record;
- nothing lost at exit: every dispatcher still open when the interpreter
  exits (normally or through an uncaught exception) is drained and its sinks
  closed by an ``atexit`` hook;
- nothing leaked: a dispatcher that is garbage-collected without ``close()``
  lets its thread deliver what is queued, close the sinks (and their files)
  and stop;
- no hang: a sink that raises anything (``Exception``, ``SystemExit``,
  ``KeyboardInterrupt``...) is reported once with its traceback and then
  counted; ``close()`` and ``flush()`` called from inside a sink return at
  once instead of waiting for themselves.
"""

import atexit
import copy
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from jaxopt_rules.logging._sinks import Record, as_sink


_LOG = logging.getLogger("jaxopt_rules")
_STOP = object()

_LIVE: set["_Worker"] = set()  # workers whose thread still runs
_LIVE_LOCK = threading.Lock()


def _describe(sink: Any) -> str:
    """A short name for a sink: its function name or its class name."""
    return getattr(sink, "__qualname__", None) or type(sink).__qualname__


class _Worker:
    """The queue, the sinks and the thread; holds no reference to its Dispatcher."""

    def __init__(self, sinks: list[Callable[[Record], None]]) -> None:
        self.sinks = sinks
        self.failures = [0] * len(sinks)
        self.delivered = 0
        self.queue: queue.Queue[Any] = queue.Queue()
        self.closed = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(
            target=self.run, name="jaxopt_rules-log", daemon=True
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.thread.start()

    def on_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, record: Record) -> None:
        if self.closed:
            _LOG.warning("record submitted after close() was dropped: %s", record)
            return
        self.queue.put(record)

    def flush(self) -> None:
        if self.closed or not self.thread.is_alive():
            return
        if self.on_thread():  # a sink asked: waiting for ourselves would hang
            self.flush_sinks()
            return
        done = threading.Event()
        self.queue.put(done)
        done.wait()

    def close(self, wait: bool = True) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.queue.put(_STOP)
        if wait and not self.on_thread():
            self.thread.join()

    def flush_sinks(self) -> None:
        for index, sink in enumerate(self.sinks):
            self.call(index, getattr(sink, "flush", None))

    def call(self, index: int, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except BaseException:
            self.failures[index] += 1
            if self.failures[index] == 1:
                _LOG.exception(
                    "jaxopt_rules: sink %s failed; training continues (further "
                    "failures of this sink are counted and reported at close)",
                    _describe(self.sinks[index]),
                )

    def run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is _STOP:
                    break
                if isinstance(item, threading.Event):
                    try:
                        self.flush_sinks()
                    finally:
                        item.set()
                    continue
                self.delivered += 1
                for index, sink in enumerate(self.sinks):
                    self.call(index, _deliver, sink, item)
            for index, sink in enumerate(self.sinks):
                self.call(index, getattr(sink, "flush", None))
                self.call(index, getattr(sink, "close", None))
            for index, count in enumerate(self.failures):
                if count:
                    _LOG.error(
                        "jaxopt_rules: sink %s failed %d time(s) (%d records "
                        "delivered to the sinks); the first failure was logged "
                        "with its traceback",
                        _describe(self.sinks[index]),
                        count,
                        self.delivered,
                    )
        finally:
            with self.lock:
                self.closed = True
            with _LIVE_LOCK:
                _LIVE.discard(self)
            # Wake anyone still waiting on a flush queued behind the stop.
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, threading.Event):
                    item.set()


def _deliver(sink: Callable[[Record], None], record: Record) -> None:
    """Hands ``sink`` its own deep copy of ``record``."""
    sink(copy.deepcopy(record))


def close_all() -> None:
    """Drains and closes every dispatcher still open (run at interpreter exit)."""
    with _LIVE_LOCK:
        workers = list(_LIVE)
    for worker in workers:
        worker.close()


atexit.register(close_all)


class Dispatcher:
    """A queue and one daemon thread that hands each record to every sink.

    Records are delivered in the order they were submitted (one thread, FIFO),
    each sink getting its own deep copy (a sink may modify it). ``submit``
    never blocks on a sink and never raises because of one: the first
    failure of each sink (any exception, ``SystemExit`` and
    ``KeyboardInterrupt`` included) is logged with its traceback on the
    ``"jaxopt_rules"`` logger, later ones are counted and the count is logged
    at close; the next sinks and records still get delivered. ``flush`` waits
    until everything submitted so far is delivered and flushes the sinks;
    ``close`` does that, closes the sinks and stops the thread. Called from
    inside a sink, ``flush`` flushes the sinks and ``close`` stops accepting
    records and returns at once (the thread delivers what was queued before,
    then closes the sinks). A dispatcher never closed is closed when it is
    garbage-collected (without waiting) or when the interpreter exits (after
    delivering everything queued). It is a context manager.

    Args:
        sinks: callables taking one record, or paths (``.jsonl``, ``.csv``).

    Example:
        >>> from jaxopt_rules.logging import Dispatcher
        >>> seen = []
        >>> with Dispatcher([seen.append]) as d:
        ...     d.submit({"step": 1})
        ...     d.submit({"step": 2})
        >>> [r["step"] for r in seen]
        [1, 2]
    """

    def __init__(self, sinks: Iterable[Callable[[Record], None] | str]) -> None:
        self.sinks = [as_sink(s) for s in sinks]
        self._worker = _Worker(self.sinks)
        self._thread = self._worker.thread
        # At garbage collection: stop without waiting. At exit, close_all()
        # (which waits for the device's pending records first) does it.
        finalizer = weakref.finalize(self, self._worker.close, False)
        finalizer.atexit = False

    @property
    def failures(self) -> dict[str, int]:
        """How many records each failing sink failed on so far (by sink name)."""
        return {
            _describe(sink): count
            for sink, count in zip(self.sinks, self._worker.failures, strict=True)
            if count
        }

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or the dispatcher was shut down)."""
        return self._worker.closed

    def submit(self, record: Record) -> None:
        """Queues a record for delivery (dropped with a warning after close)."""
        self._worker.submit(record)

    def flush(self) -> None:
        """Waits until every record submitted so far is delivered; flushes sinks."""
        self._worker.flush()

    def close(self) -> None:
        """Delivers what is queued, closes the sinks, stops the thread. Idempotent."""
        self._worker.close()

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
