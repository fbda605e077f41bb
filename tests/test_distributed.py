"""examples/distributed.py: 2 processes x 4 devices, resumed on 2, match one device.

The example is started as a user starts it (``--launch``): two OS processes
with 4 CPU devices each join one JAX job through ``jax.distributed.initialize``
and train ``STEPS`` steps with ``jr.adamw``, params and moments sharded over
the 8 devices; an orbax checkpoint written by both is restored by one process
with 2 devices, which trains ``RESUME_STEPS`` more. This test replays the same
steps in its own process on one device, with a plain loop of its own, and
compares the losses of every step, the shard shapes the workers report, and
the params and Adam moments of both checkpoints.

Tolerance: ``rtol = 1e-5`` (losses; params and moments, with an absolute
floor of ``1e-5`` times the leaf's largest magnitude for elements near 0).
Both runs do the same float32 math, but the 8-device run sums each
gradient's batch mean in another order (a partial sum per device, then an
all-reduce across processes), so results differ by rounding: measured, at
most 1.1e-7 relative on the losses and 2 ulp on the params over 30 steps.
A real fault moves them by far more: resuming with a fresh optimizer state
changes the later losses by 18%, with Adam's step count reset by 6%, with one
batch skipped by 12%.
"""

import ast
import os
import re
import signal
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import ROOT, load_example

import jaxopt_rules as jr


STEPS = 10
RESUME_STEPS = 6
RTOL = 1e-5
TIMEOUT_S = 300
"""The whole example's limit; each of its two jobs has 120 s (its ``--timeout``)."""


def run_example(directory: str) -> str:
    """Runs ``examples/distributed.py --launch``; returns its output.

    The launcher and its workers run in a process group of their own, killed
    as a whole if they run past ``TIMEOUT_S``: a hang fails the test.
    """
    command = [
        sys.executable,
        str(ROOT / "examples" / "distributed.py"),
        "--launch",
        f"--dir={directory}",
        f"--steps={STEPS}",
        f"--resume-steps={RESUME_STEPS}",
        "--processes=2",
        "--devices=4",
        "--resume-processes=1",
        "--resume-devices=2",
        "--timeout=120",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the example hung past {TIMEOUT_S} s:\n{out}\n{err}")
    assert process.returncode == 0, f"{out}\n{err}"
    return out


def parse_jobs(out: str) -> list[dict[str, Any]]:
    """The example's output, one dict per job: topology, shard shapes, losses."""
    jobs = []
    for line in out.splitlines():
        header = re.match(r"== (\d+) process\(es\) x (\d+) CPU devices = (\d+)", line)
        shard = re.match(
            r"\s+(\w+): global (\(.*?\)), per device: param (\(.*?\)), "
            r"mu/nu (\(.*?\))",
            line,
        )
        step = re.search(r"step\s+(\d+)\s+loss\s+(\S+)", line)
        if header:
            processes, local, total = map(int, header.groups())
            jobs.append(
                {
                    "processes": processes,
                    "local": local,
                    "devices": total,
                    "shapes": {},
                    "losses": {},
                }
            )
        elif shard:
            name, *shapes = shard.groups()
            jobs[-1]["shapes"][name] = [ast.literal_eval(s) for s in shapes]
        elif step:
            jobs[-1]["losses"][int(step[1])] = float(step[2])
    return jobs


def reference_run(example: Any) -> tuple[dict[int, float], dict[int, Any]]:
    """The same steps on one device: losses, and (params, state) after each job."""
    tx = jr.adamw(example.LEARNING_RATE, weight_decay=example.WEIGHT_DECAY)

    @jax.jit
    def step(params: Any, state: Any, x: Any, y: Any) -> tuple[Any, Any, Any]:
        loss, grads = jax.value_and_grad(example.loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    params = jax.tree.map(jnp.asarray, example.init_params())
    state = tx.init(params)
    losses, snapshots = {}, {}
    for t in range(1, STEPS + RESUME_STEPS + 1):
        params, state, loss = step(params, state, *example.batch(t))
        losses[t] = float(loss)
        if t in (STEPS, STEPS + RESUME_STEPS):
            snapshots[t] = {"params": params, "opt_state": state}
    return losses, snapshots


def assert_close(got: Any, want: Any, what: str) -> None:
    """Leafwise float32 agreement up to reduction-order rounding (module docstring)."""
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
        g, w = np.asarray(g), np.asarray(w)
        name = f"{what}{jax.tree_util.keystr(path)}"
        if not np.issubdtype(w.dtype, np.floating):
            np.testing.assert_array_equal(g, w, err_msg=name)
            continue
        floor = RTOL * float(np.max(np.abs(w)))
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=floor, err_msg=name)


def test_two_process_fsdp_run_resumed_on_two_devices_matches_one_process(tmp_path):
    out = run_example(str(tmp_path))
    example = load_example("distributed")
    want_losses, snapshots = reference_run(example)
    first, resumed = parse_jobs(out)

    # Real multi-controller: 2 processes x 4 devices, then 1 process x 2.
    assert (first["processes"], first["local"], first["devices"]) == (2, 4, 8)
    assert (resumed["processes"], resumed["local"], resumed["devices"]) == (1, 2, 2)

    # FSDP: each param and both its moments hold 1/N of the leading axis on a
    # device (the whole leaf only where N does not divide it: the 4-element
    # last bias on 8 devices).
    params = snapshots[STEPS]["params"]
    for job in (first, resumed):
        n = job["devices"]
        assert set(job["shapes"]) == set(params)
        for name, (global_shape, param_shard, moment_shard) in job["shapes"].items():
            assert global_shape == params[name].shape
            lead, *rest = global_shape
            want = (lead // n, *rest) if lead % n == 0 else global_shape
            assert param_shard == moment_shard == want, (n, name)
    assert first["shapes"]["w1"][1] == (8, 32)  # 64 rows over 8 devices

    # Every step's loss, the resumed job's included, matches one process.
    assert sorted(first["losses"]) == list(range(1, STEPS + 1))
    assert sorted(resumed["losses"]) == list(range(STEPS + 1, STEPS + RESUME_STEPS + 1))
    got_losses = first["losses"] | resumed["losses"]
    for t, want in want_losses.items():
        assert got_losses[t] == pytest.approx(want, rel=RTOL), t
    assert got_losses[STEPS + RESUME_STEPS] < 0.5 * got_losses[1]  # it learns

    # Both checkpoints (written by 2 processes, then by 1) restore here, onto
    # one device, with the reference's params and moments, and its step count.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for t, want in snapshots.items():
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), want
        )
        got = ocp.StandardCheckpointer().restore(tmp_path / f"step_{t}", target)
        assert int(got["opt_state"].count) == t
        assert_close(got, want, f"step_{t}")
