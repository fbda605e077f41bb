"""Matrix rules on 1, 2, 4 and 8 devices: state bytes per device and step time.

Muon, Shampoo, SOAP and PSGD Kron do whole-matrix work (Newton-Schulz,
eigendecompositions, QR, triangular solves) that does not shard
elementwise. Under explicit sharding, ``jr.muon`` moves a stack of matrices
sharded over their rows onto its stack axis (one all-to-all each way), so
each device iterates on its own whole matrices; ``jr.soap`` and
``jr.psgd_kron`` do the same for a leaf marked in ``scanned_layers`` (each
device also stores its layers' factors); ``jr.shampoo`` spreads a leaf's
blocks over the devices. For each device count ``N`` this script builds an
explicit mesh of ``N`` devices and times one jitted step (median over
rounds) of:

- ``muon stack``: one ``(L, m, m)`` leaf sharded ``P(None, 'x', None)``
  (each device owns ``L / N`` whole matrices);
- ``muon separate``: the same matrices as ``L`` separate ``(m, m)`` leaves
  sharded ``P('x', None)`` (each matrix gathered and iterated on every
  device: the layout the per-leaf rule cannot distribute);
- ``shampoo``: one ``(k b, k b)`` leaf in blocks of ``b`` sharded
  ``P('x', None)`` (``k^2`` blocks spread over the devices);
- ``soap stack`` / ``psgd_kron stack``: the ``(L, m, m)`` leaf as scanned
  layers (SOAP refreshing its bases by QR at every step, PSGD Kron fitting
  its factors at every step), and ``soap separate`` / ``psgd_kron
  separate``: the ``L`` separate leaves (each gathered). These and
  Shampoo run on at most 4 virtual CPU devices (:data:`STACKS_WITH_LAPACK`).

State bytes per device are read from the state's shards (the most any one
device holds). On a CPU host the ``N`` devices are virtual and share the
host's cores, so the step times show the work each layout does in all (a
gathered matrix is iterated ``N`` times), not a speed-up from more hardware.

With ``--processes`` each device is a process of its own: ``N`` processes
with one CPU device each join one job (``jax.distributed.initialize`` on
localhost, collectives through gloo) and run every case on the ``N``
devices, Shampoo's, SOAP's and PSGD Kron's on 8 too: each process has its
own threads, so no device's collective waits on a thread another device's
LAPACK work holds.

Usage::

    python -m benchmarks.matrix_scaling              # ~3 minutes on 2 cores
    python -m benchmarks.matrix_scaling --processes  # one per device: ~11 minutes
    python -m benchmarks.matrix_scaling --markdown
"""

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any


if __name__ == "__main__" and "jax" not in sys.modules and "--worker" not in sys.argv:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from optax.contrib import MuonDimensionNumbers

import jaxopt_rules as jr
from benchmarks import _table
from benchmarks._timing import Timed, calibrate, measure, median_ms
from benchmarks.sharded_state import per_device_bytes


def _case(
    name: str,
    tx: optax.GradientTransformation,
    shapes: dict[str, tuple[int, ...]],
    specs: dict[str, P],
    max_devices: int = 8,
) -> Callable[[jax.sharding.Mesh], tuple[int, Timed]]:
    def build(mesh: jax.sharding.Mesh) -> tuple[int, Timed]:
        rng = np.random.default_rng(0)
        host = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
        put = {n: NamedSharding(mesh, specs[n]) for n in shapes}
        # (from the host array each process holds whole: also across processes)
        place = lambda x, sh: jax.make_array_from_callback(
            x.shape, sh, lambda index: x[index]
        )
        params = {n: place(host[n], put[n]) for n in shapes}
        grads = {n: place(host[n] * 0.1, put[n]) for n in shapes}
        state = jax.jit(tx.init)(params)
        step = jax.jit(tx.update)
        holder = [state]

        def run() -> None:
            _, holder[0] = step(grads, holder[0], params)

        def sync() -> None:
            jax.block_until_ready(holder[0])

        timed = Timed(name, run, sync, steps=2)
        calibrate(timed, 0.2, max_steps=20)
        held = per_device_bytes(holder[0])
        if jax.process_count() > 1:
            # Every process steps as often as the first (each step is a
            # collective); the state's most bytes on any device.
            steps = multihost_utils.broadcast_one_to_all(np.int32(timed.steps))
            timed.steps = int(steps)
            held = int(np.max(multihost_utils.process_allgather(np.int64(held))))
        return held, timed

    build.__name__ = name
    build.max_devices = max_devices  # pyright: ignore[reportFunctionMemberAccess]
    return build


STACKS_WITH_LAPACK = 4
"""The most virtual CPU devices Shampoo's, SOAP's and PSGD Kron's cases run on.

On 8 virtual devices sharing 2 cores their steps stop in XLA:CPU's
collectives (jaxlib 0.10.2: "Expected 8 threads to join the rendezvous, but
only 1 of them arrived"; a device's program waits in an all-to-all or
all-gather on one of the 2 threads of the pool the other devices' matrix
work needs), for 64 x 64 layers and larger, with or without the
concurrency-optimized scheduler or multi-threaded Eigen; the tests' 32 x 24
layers run. Real devices do not share a thread pool, nor do processes:
with ``--processes`` every case runs on 8."""


def cases(stack: int, size: int, blocks: int, block: int) -> list[Any]:
    dims = MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    muon_stack = jr.muon(1e-2, muon_weight_dimension_numbers={"w": dims})
    separate = {f"w{i}": (size, size) for i in range(stack)}
    shampoo = jr.shampoo(
        1e-2,
        block_size=block,
        start_preconditioning_step=1,
        preconditioning_compute_steps=1,
    )
    side = blocks * block
    return [
        _case(
            "muon stack",
            muon_stack,
            {"w": (stack, size, size)},
            {"w": P(None, "x", None)},
        ),
        _case(
            "muon separate",
            jr.muon(1e-2),
            separate,
            {n: P("x", None) for n in separate},
        ),
        _case(
            "shampoo",
            shampoo,
            {"w": (side, side)},
            {"w": P("x", None)},
            max_devices=STACKS_WITH_LAPACK,
        ),
        _case(
            "soap stack",
            jr.soap(1e-2, precondition_frequency=1, scanned_layers=True),
            {"w": (stack, size, size)},
            {"w": P(None, "x", None)},
            max_devices=STACKS_WITH_LAPACK,
        ),
        _case(
            "soap separate",
            jr.soap(1e-2, precondition_frequency=1),
            separate,
            {n: P("x", None) for n in separate},
            max_devices=STACKS_WITH_LAPACK,
        ),
        _case(
            "psgd_kron stack",
            jr.psgd_kron(1e-2, scanned_layers=True),
            {"w": (stack, size, size)},
            {"w": P(None, "x", None)},
            max_devices=STACKS_WITH_LAPACK,
        ),
        _case(
            "psgd_kron separate",
            jr.psgd_kron(1e-2),
            separate,
            {n: P("x", None) for n in separate},
            max_devices=STACKS_WITH_LAPACK,
        ),
    ]


def _rows(n: int, args: argparse.Namespace, limit: bool) -> list[list[str]]:
    """Each case's row on an explicit mesh of the first ``n`` devices."""
    mesh = jax.make_mesh(
        (n,), ("x",), axis_types=(AxisType.Explicit,), devices=jax.devices()[:n]
    )
    with jax.set_mesh(mesh):
        built = [
            (c.__name__, *c(mesh))
            for c in cases(args.stack, args.size, args.blocks, args.block)
            if not limit or n <= c.max_devices
        ]
        measure([timed for _, _, timed in built], args.rounds)
    return [
        [name, str(n), f"{state_bytes / 2**20:.2f}", f"{median_ms(timed):.1f}"]
        for name, state_bytes, timed in built
    ]


def _worker(args: argparse.Namespace) -> None:
    """One process of a ``--processes`` job: one CPU device; the first prints."""
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=120,
    )
    rows = _rows(jax.device_count(), args, limit=False)
    if jax.process_index() == 0:
        print("ROWS " + json.dumps(rows), flush=True)
    jax.distributed.shutdown()


def _job(n: int, args: argparse.Namespace, timeout: float = 1200) -> list[list[str]]:
    """Runs the cases as ``n`` processes of one device each; the first's rows."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shared = [
        f"--{k}={getattr(args, k)}"
        for k in ("stack", "size", "blocks", "block", "rounds")
    ]
    command = [sys.executable, "-m", "benchmarks.matrix_scaling", "--worker"]
    # XLA:CPU's concurrency-optimized scheduler stops a one-device process's
    # SOAP stack step with every thread waiting (as it stops the
    # leaderboard's LAPACK sweeps, docs/performance.md); the default one runs.
    flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", ""
    )
    env = {
        **os.environ,
        "XLA_FLAGS": flags + " --xla_cpu_enable_concurrency_optimized_scheduler=false",
    }
    workers = [
        subprocess.Popen(
            [
                *command,
                *shared,
                f"--coordinator=127.0.0.1:{port}",
                f"--num-processes={n}",
                f"--process-id={i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    try:
        out, _ = workers[0].communicate(timeout=timeout)
        codes = [w.wait(timeout=60) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    lines = [line for line in out.splitlines() if line.startswith("ROWS ")]
    if any(codes) or not lines:
        raise SystemExit(f"the {n}-process job failed (exit statuses {codes})")
    return json.loads(lines[0][len("ROWS ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=4, help="blocks per side")
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--processes", action="store_true", help="one process per device"
    )
    parser.add_argument(
        "--counts", type=int, nargs="*", default=[1, 2, 4, 8], help="device counts"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    rows = []
    for n in args.counts:
        if args.processes:
            rows += _job(n, args)
        else:
            rows += _rows(n, args, limit=True)
    print(
        f"{args.stack} matrices {args.size}x{args.size} (muon); a "
        f"{args.blocks * args.block}x{args.blocks * args.block} leaf in blocks of "
        f"{args.block} (shampoo); {jax.devices()[0].platform}, median of "
        f"{args.rounds} rounds" + ("; one process per device" if args.processes else "")
    )
    _table.print_table(
        [
            "layout",
            "processes" if args.processes else "devices",
            "state MiB/device",
            "step ms",
        ],
        rows,
        "lrrr",
        markdown=args.markdown,
    )


if __name__ == "__main__":
    main()
