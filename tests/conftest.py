"""Test configuration: 8 virtual CPU devices, and one compilation cache for the run.

Most of the suite's time is XLA compiling small programs, and many tests
compile the same one (a rule's jitted step on the kit's example tree appears in
the checkpoint, framework and bit-identity tests). JAX's persistent
compilation cache lets the two pytest workers, both invocations of the README
command and the subprocesses the tests start share them: a program compiled
once is loaded, not compiled again. Every program still runs; a hit returns
the executable XLA built for the same program. ``.jax_cache/`` is ignored by
git; delete it to start cold (``JAX_COMPILATION_CACHE_DIR`` overrides the
place).
"""

import os
from pathlib import Path

import jax
import pytest


_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parent.parent / ".jax_cache")
)
# Subprocesses (the examples, the two-process run) inherit these.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# Must happen before JAX initialises its backend (at the first computation).
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


# A crashed worker: one more run, on a fresh worker.
#
# Four times in five full runs on 2 cores (2026-12-03 and 12-04) a pytest
# worker died of a segmentation fault inside JAX's persistent-cache read
# (``jax._src.compilation_cache.get_executable_and_time``, where XLA:CPU
# deserialises an executable compiled earlier), each time for a control-flow
# primitive run eagerly (``lax.cond`` in tests/test_sophia.py; ``lax.scan`` in
# optax's L-BFGS, three times, in tests/test_drop_in.py's complex run). Each test
# passed when run again, and no crash could be reproduced on purpose (thousands of
# deserialisations, with two processes sharing the cache). A test whose worker
# crashes is therefore scheduled once more; it passes only if that second run
# passes, and the terminal shows the crash (faulthandler's stack), an ``R`` and
# "1 rerun" in the summary. A test that crashes twice fails.
_CRASH_RERUNS = 1
_crashed: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched) -> None:
    crashes = _crashed.get(crashitem, 0)
    _crashed[crashitem] = crashes + 1
    if crashes < _CRASH_RERUNS:
        sched.mark_test_pending(crashitem)
        report.outcome = "rerun"  # pyright: ignore[reportAttributeAccessIssue]


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    if report.outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None
