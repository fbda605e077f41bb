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


_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parent.parent / ".jax_cache")
)
# Subprocesses (the examples, the two-process run) inherit these.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# Must happen before JAX initialises its backend (at the first computation).
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
