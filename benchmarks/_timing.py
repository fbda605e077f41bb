"""Paired, interleaved timing: medians and per-round ratios.

Every candidate of a comparison runs in the same rounds, in a fresh (seeded)
random order each round, so a slow moment of a shared machine lands on one
round of every candidate rather than on all rounds of one. A ratio between two
candidates is the median over rounds of their per-round ratio, which cancels
what the round had in common; a time is the median over rounds.

Python's garbage collector is paused while timing (with tens of thousands of
live arrays its collections would land on random candidates), and a short
pause after each candidate lets one framework's spinning worker threads settle
before the next one runs.

Example::

    a = Timed("plain", run=lambda: f(x), sync=lambda: None, steps=100)
    b = Timed("other", run=lambda: g(x), sync=lambda: None, steps=100)
    measure([a, b], rounds=5)
    print(median_ms(a), paired_ratio(b, a))
"""

import dataclasses
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class Timed:
    """One thing to time: ``run`` does one step, ``sync`` waits for it.

    Attributes:
        label: the name printed for it.
        run: one step (dispatched; it may return before the work is done).
        sync: blocks until every dispatched step has finished.
        steps: steps per round (set by :func:`calibrate`, or fixed).
        times: ms per step, one entry per timed round (filled by :func:`measure`).
    """

    label: str
    run: Callable[[], None]
    sync: Callable[[], None]
    steps: int = 1
    times: list[float] = dataclasses.field(default_factory=list)


def donated_loop(
    compiled: Callable[..., tuple[Any, Any]], params: Any, state: Any, grads: Any
) -> tuple[Callable[[], None], Callable[[], None], list[Any]]:
    """``run`` and ``sync`` of a donated step ``params, state = f(params, state, g)``.

    Returns:
        ``(run, sync, box)``: ``box`` holds the current ``[params, state]``.
    """
    box = [params, state]

    def run() -> None:
        box[0], box[1] = compiled(box[0], box[1], grads)

    def sync() -> None:
        jax.block_until_ready(box[0])

    return run, sync, box


def calibrate(timed: Timed, target_s: float, max_steps: int = 200) -> None:
    """Warms ``timed`` up and sets its steps per round to about ``target_s`` seconds.

    At least 2 steps and at most ``max_steps``.
    """
    timed.run()
    timed.sync()
    start = time.perf_counter()
    timed.run()
    timed.sync()
    once = max(time.perf_counter() - start, 1e-6)
    timed.steps = int(min(max(target_s / once, 2), max_steps))


def measure(
    candidates: Sequence[Timed],
    rounds: int,
    *,
    pause: float = 0.02,
    warmup_rounds: int = 0,
    seed: int = 0,
) -> None:
    """Times every candidate in ``rounds`` interleaved rounds.

    Each round runs every candidate for its ``steps`` steps, in a random order
    drawn from ``seed``, and appends its ms per step to ``times``; the first
    ``warmup_rounds`` rounds run the same way and are not recorded.

    Args:
        candidates: what to time.
        rounds: rounds recorded.
        pause: seconds slept after each candidate's turn.
        warmup_rounds: rounds run first and discarded.
        seed: seed of the order of each round.
    """
    order = np.random.default_rng(seed)
    gc.collect()
    gc.disable()
    try:
        for r in range(warmup_rounds + rounds):
            for k in order.permutation(len(candidates)):
                c = candidates[k]
                start = time.perf_counter()
                for _ in range(c.steps):
                    c.run()
                c.sync()
                elapsed = time.perf_counter() - start
                if r >= warmup_rounds:
                    c.times.append(elapsed / c.steps * 1e3)
                time.sleep(pause)
    finally:
        gc.enable()


def median_ms(timed: Timed) -> float:
    """Median ms per step over the recorded rounds."""
    return statistics.median(timed.times)


def paired_ratio(a: Timed | None, b: Timed | None) -> float | None:
    """Median over rounds of ``a``'s time / ``b``'s time; None if either is missing."""
    if a is None or b is None or not a.times or not b.times:
        return None
    return statistics.median(x / y for x, y in zip(a.times, b.times, strict=True))
