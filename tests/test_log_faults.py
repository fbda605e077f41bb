"""log_step and its dispatcher under faults: exits, crashes, bad sinks, leaks."""

import gc
import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules.logging import Dispatcher


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_script(body: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )


_TRAIN_200 = """
    import json, pathlib, time
    import jax, jax.numpy as jnp, optax
    import jaxopt_rules as jr

    def slow(record):  # 5 ms per record, one open/append/close each
        time.sleep(0.005)
        with open("slow.txt", "a") as file:
            file.write(json.dumps(record["step"]) + "\\n")

    tx = jr.log_step(optax.sgd(0.1), every=1, sinks=["steps.jsonl", slow])
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for k in range(200):
        updates, state = update(jax.tree.map(lambda p: p * k, params), state, params)
    {ending}
"""


@pytest.mark.parametrize(
    ("ending", "returncode"),
    [("pass", 0), ("raise RuntimeError('crash at top level')", 1)],
    ids=["exit", "crash"],
)
def test_nothing_emitted_is_lost_when_the_process_ends_without_close(
    tmp_path, ending, returncode
):
    result = _run_script(_TRAIN_200.replace("{ending}", ending), tmp_path)
    assert result.returncode == returncode, result.stderr
    lines = (tmp_path / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(200))
    slow = (tmp_path / "slow.txt").read_text().split()
    assert [int(step) for step in slow] == list(range(200))
    if returncode:
        assert "crash at top level" in result.stderr


def test_without_sinks_the_dropped_records_get_a_one_time_hint(tmp_path):
    body = """
        import sys
        import jax, jax.numpy as jnp, optax
        import jaxopt_rules as jr
        {setup}
        tx = jr.log_step(optax.sgd(0.1), every=1)
        params = {{"w": jnp.ones(3)}}
        state = tx.init(params)
        for _ in range(3):
            _, state = jax.jit(tx.update)(params, state, params)
        tx.close()
    """
    silent = _run_script(body.format(setup=""), tmp_path)
    assert silent.returncode == 0, silent.stderr
    assert silent.stderr.count("logging.basicConfig(level=logging.INFO)") == 1
    assert "jaxopt_rules.steps" in silent.stderr
    assert "grad_norm" not in silent.stderr  # the records themselves are dropped

    configured = _run_script(
        body.format(setup="import logging; logging.basicConfig(level=logging.INFO)"),
        tmp_path,
    )
    assert configured.returncode == 0, configured.stderr
    assert "basicConfig" not in configured.stderr  # no hint when they are seen
    assert configured.stderr.count("grad_norm=") == 3


def _returns_within(fn, seconds=20.0) -> bool:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


class _ClosingSink:
    """Calls its dispatcher's flush() then close() from inside delivery."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None
        self.seen: list[int] = []
        self.closed = False

    def __call__(self, record):
        self.seen.append(record["step"])
        if record["step"] == 1:
            assert self.dispatcher is not None
            self.dispatcher.flush()
            self.dispatcher.close()

    def close(self):
        self.closed = True


def test_close_and_flush_from_inside_a_sink_return_and_deliver_what_was_queued():
    sink = _ClosingSink()
    gate = threading.Event()
    dispatcher = Dispatcher([lambda r: gate.wait(10), sink])
    sink.dispatcher = dispatcher
    for step in range(4):  # all queued before the sink closes
        dispatcher.submit({"step": step})
    gate.set()
    assert _returns_within(dispatcher.close)
    assert sink.seen == [0, 1, 2, 3]  # queued before close(): delivered
    assert sink.closed
    assert not dispatcher._thread.is_alive()


def test_a_sink_closing_through_log_step_does_not_deadlock():
    box = {}

    def closing(record):
        box["tx"].close()

    tx = jr.log_step(optax.sgd(0.1), every=1, sinks=[closing])
    box["tx"] = tx
    params = {"w": jnp.ones(3)}
    jax.jit(tx.update)(params, tx.init(params), params)
    assert _returns_within(tx.close)


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, BaseException])
def test_a_sink_raising_any_base_exception_neither_kills_delivery_nor_hangs_close(
    error, caplog
):
    seen = []

    def fatal(record):
        raise error("sink gave up")

    dispatcher = Dispatcher([fatal, seen.append])
    with caplog.at_level(logging.ERROR, logger="jaxopt_rules"):
        for step in range(3):
            dispatcher.submit({"step": step})
        assert _returns_within(dispatcher.close)
    assert [r["step"] for r in seen] == [0, 1, 2]
    assert "failed 3 time(s)" in caplog.text


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_dropped_log_steps_release_their_threads_and_files(tmp_path):
    params = {"w": jnp.ones(3)}
    gc.collect()
    threads, descriptors = threading.active_count(), _open_descriptors()

    def sweep_member(i: int) -> None:
        tx = jr.log_step(optax.sgd(0.1), every=1, sinks=[tmp_path / f"{i}.jsonl"])
        state = tx.init(params)
        jax.jit(tx.update)(params, state, params)
        jax.effects_barrier()
        # never closed

    for i in range(40):
        sweep_member(i)
    gc.collect()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and threading.active_count() > threads:
        time.sleep(0.05)
        gc.collect()
    assert threading.active_count() == threads
    assert _open_descriptors() == descriptors
    for i in range(40):  # and what they emitted was written
        assert len((tmp_path / f"{i}.jsonl").read_text().splitlines()) == 1
