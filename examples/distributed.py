"""Multi-process FSDP training with a drop-in optimizer, checkpointed and resumed.

What it shows:

* real JAX multi-controller training: two OS processes, each with 4 CPU
  devices, join one 8-device job through ``jax.distributed.initialize`` (the
  coordinator listens on 127.0.0.1, CPU collectives go through gloo);
* FSDP-style sharding on an explicit mesh: every parameter whose leading axis
  divides the mesh is split along it over all 8 devices, the batch too (the
  model gathers each weight before it uses it), and the optimizer's moments
  (``mu`` and ``nu``) are sharded exactly like the parameters, so each device
  holds 1/8 of the parameters and 1/8 of the moments (the example checks it
  and prints the per-device shard shapes);
* a matrix rule's per-layer work spread over the processes' devices
  (``--optimizer soap``): the model's 8 residual layers are one scanned stack,
  ``jaxopt_rules.soap(scanned_layers=...)`` preconditions each layer on its
  own, and each device refreshes and stores only its own layer's Kronecker
  factors and eigenbases (printed: one layer's per device);
* an orbax checkpoint written by both processes into one directory, restored
  into a job with another device count (one process with 2 devices), which
  continues training: the loss goes on from where it stopped.

The model is a small MLP regressing a random teacher network on generated
data, so nothing is downloaded. Every process computes the same global batch
and hands each of its devices its rows (``jax.make_array_from_callback``); a
real input pipeline would read only its own rows.

Run the whole demo (it spawns the worker processes itself; 20-40 s on 2 CPU cores)::

    python examples/distributed.py --launch
    python examples/distributed.py --launch --optimizer soap

It prints the per-step losses of each phase. Options: ``--optimizer``
(``adamw`` or ``soap``), ``--processes``,
``--devices`` (per process), ``--steps``; ``--resume-processes``,
``--resume-devices``, ``--resume-steps`` for the resumed run; ``--dir`` keeps
the checkpoints there (``<dir>/step_<n>``, default: a temporary folder).
Each worker is this script with ``--worker``; to start one by hand on each
host, pass ``--coordinator HOST:PORT --num-processes N --process-id I``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec
from optax.contrib import MuonDimensionNumbers

import jaxopt_rules as jr


Params = dict[str, jax.Array]

SIZES = (16, 64, 32, 4)
"""MLP layer widths: input, two hidden layers, output."""
LAYERS = 8
"""Residual layers of width ``SIZES[1]`` after the first, stored as one stack."""
GLOBAL_BATCH = 64
DATASET_ROWS = 512
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-2
AXIS = "fsdp"


# --- The model, the data and the optimizer: plain JAX, no sharding. --------


OPTIMIZERS = ("adamw", "muon", "soap")


def make_optimizer(name: str = "adamw") -> optax.GradientTransformation:
    """``jaxopt_rules.adamw``, ``muon`` or ``soap``, the last two layer by layer.

    Muon orthogonalises each layer of ``blocks`` on its own (a stack of
    matrices: rows on axis 1, columns on axis 2) and each other weight
    matrix (AdamW steps for the biases). SOAP preconditions each layer of
    ``blocks`` on its own (its own Kronecker factors and eigenbases,
    ``(LAYERS, ...)`` per slot), the other weights as whole matrices.
    """
    if name == "adamw":
        return jr.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    if name == "muon":
        stack = MuonDimensionNumbers(reduction_axis=1, output_axis=2)
        kinds = {3: stack, 2: MuonDimensionNumbers(), 1: None}  # (None: AdamW)
        matrices = lambda params: {key: kinds[p.ndim] for key, p in params.items()}
        return jr.muon(
            LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
            muon_weight_dimension_numbers=matrices,
        )
    if name == "soap":
        scanned = lambda params: {key: key == "blocks" for key in params}
        return jr.soap(LEARNING_RATE, weight_decay=WEIGHT_DECAY, scanned_layers=scanned)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def init_params(seed: int = 0) -> dict[str, np.ndarray]:
    """The MLP's parameters, as host (NumPy) float32 arrays.

    Weights ``w<i>`` of shape ``(fan_in, fan_out)`` and biases ``b<i>``, and
    ``blocks``: ``LAYERS`` residual layers' ``(width, width)`` weights in one
    ``(LAYERS, width, width)`` array (a model built with ``lax.scan``). The
    last bias has 4 elements, fewer than the mesh has devices, so it stays
    replicated (see :func:`fsdp_spec`).
    """
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(SIZES)):
        scale = np.sqrt(2.0 / fan_in)
        params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out)) * scale).astype(
            np.float32
        )
        params[f"b{i}"] = np.zeros(fan_out, np.float32)
    width = SIZES[1]
    blocks = rng.standard_normal((LAYERS, width, width)) * 0.2 / np.sqrt(width)
    params["blocks"] = blocks.astype(np.float32)
    return params


def dataset(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Generated regression data: inputs and a random teacher's noisy outputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((DATASET_ROWS, SIZES[0])).astype(np.float32)
    teacher = rng.standard_normal((SIZES[0], SIZES[-1])).astype(np.float32)
    y = np.tanh(x @ teacher) + 0.05 * rng.standard_normal((DATASET_ROWS, SIZES[-1]))
    return x, y.astype(np.float32)


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of training step ``step`` (1-based), cycling the data."""
    x, y = dataset()
    start = (step - 1) * GLOBAL_BATCH % DATASET_ROWS
    return x[start : start + GLOBAL_BATCH], y[start : start + GLOBAL_BATCH]


def gathered(w: jax.Array) -> jax.Array:
    """The whole of ``w`` (FSDP's all-gather before use) where it is sharded."""
    if any(entry is not None for entry in jax.typeof(w).sharding.spec):
        return jax.sharding.reshard(w, PartitionSpec())
    return w


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error of the MLP (ReLU hidden layers) on one batch.

    After the first layer, ``LAYERS`` residual layers ``h + relu(h @ W)``
    scanned over ``blocks``. Each weight is gathered where it is used; its
    gradient comes back sharded like it (a reduce-scatter).
    """
    params = {name: gathered(w) for name, w in params.items()}

    def residual(h: jax.Array, w: jax.Array) -> tuple[jax.Array, None]:
        return h + jax.nn.relu(h @ w), None

    h = x
    layers = len(SIZES) - 1
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = jax.nn.relu(h)
        if i == 0:
            h, _ = jax.lax.scan(residual, h, params["blocks"])
    return jnp.mean((h - y) ** 2)


def train_step(
    tx: optax.GradientTransformation, params: Params, opt_state: Any, x: Any, y: Any
) -> tuple[Any, Any, jax.Array]:
    """One optimizer step; returns the new params and state, and the loss before it."""
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


# --- FSDP sharding over a global mesh. --------------------------------------


def fsdp_spec(shape: tuple[int, ...], devices: int) -> PartitionSpec:
    """Shards the leading axis over the mesh when it divides evenly, else replicates."""
    if shape and shape[0] % devices == 0:
        return PartitionSpec(AXIS)
    return PartitionSpec()


def fsdp_shardings(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A ``NamedSharding`` for every leaf of ``tree`` (arrays or shape structs)."""
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, fsdp_spec(leaf.shape, mesh.size)), tree
    )


def check_state_sharded_like_params(params: Params, opt_state: Any) -> None:
    """Checks that the moments of each parameter have its sharding.

    Every parameter has a first moment ``mu`` of its shape; a second moment
    ``nu`` where the rule keeps one (Muon keeps a scalar zero for a matrix).

    Raises:
        AssertionError: naming the first moment sharded otherwise.
    """
    for slot in ("mu", "nu"):
        for name, param in params.items():
            moment = getattr(opt_state, slot)[name]
            if slot == "nu" and moment.shape != param.shape:
                continue
            if not moment.sharding.is_equivalent_to(param.sharding, param.ndim):
                raise AssertionError(
                    f"{slot}[{name!r}] is sharded as {moment.sharding}, "
                    f"its parameter as {param.sharding}"
                )


def state_shardings(tx: optax.GradientTransformation, param_sh: Any) -> Any:
    """The optimizer state's shardings, as the rule lays its state out.

    The moments are sharded like the parameters; a matrix rule's per-layer
    state (SOAP's factors and eigenbases of ``blocks``) lies with the devices
    that own its layers, its whole-matrix state replicated. Read off the
    rule's ``init`` on abstract parameters, so a restored state has the
    layout that training gives it.
    """
    abstract = jax.tree.map(
        lambda leaf, sh: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh),
        init_params(),
        param_sh,
    )
    mesh = jax.tree.leaves(param_sh)[0].mesh
    with jax.set_mesh(mesh):
        shapes = jax.eval_shape(tx.init, abstract)
    spec = lambda s: PartitionSpec() if s.sharding is None else s.sharding.spec
    return jax.tree.map(lambda s: NamedSharding(mesh, spec(s)), shapes)


def check_state_laid_out(opt_state: Any, shardings: Any) -> None:
    """Checks that every state leaf has the layout :func:`state_shardings` gives.

    Raises:
        AssertionError: naming the first leaf laid out otherwise.
    """
    for (path, leaf), want in zip(
        jax.tree_util.tree_leaves_with_path(opt_state),
        jax.tree.leaves(shardings),
        strict=True,
    ):
        if not leaf.sharding.is_equivalent_to(want, leaf.ndim):
            raise AssertionError(
                f"state{jax.tree_util.keystr(path)} is sharded as {leaf.sharding}, "
                f"its rule lays it out as {want}"
            )


def shard_shapes(tree: Any) -> Any:
    """The shape of each leaf's shard on this process's first device."""
    return jax.tree.map(lambda a: a.addressable_shards[0].data.shape, tree)


# --- One worker process. ----------------------------------------------------


def global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full."""
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def worker(args: argparse.Namespace) -> None:
    """Trains from step ``args.start`` to ``args.stop`` as one process of the job.

    Joins the job (``jax.distributed.initialize``), builds the global FSDP
    mesh, starts fresh (``start == 0``) or restores ``<dir>/step_<start>``
    resharded onto this job's devices, trains, and saves ``<dir>/step_<stop>``.
    Process 0 prints the topology, the shard shapes and each step's loss.

    Args:
        args: the parsed ``--worker`` command line (see :func:`parse_args`).
    """
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.devices)
    # Cross-process collectives on CPU (gloo is jax 0.10's default; say it).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=60,
        heartbeat_timeout_seconds=30,
    )
    lead = jax.process_index() == 0
    # Explicit axes: shardings are part of the arrays' types; the model
    # gathers the weights it uses (``gathered``) and the matrix rules see
    # which device owns which layer.
    mesh = jax.make_mesh(
        (jax.device_count(),), (AXIS,), axis_types=(jax.sharding.AxisType.Explicit,)
    )
    jax.sharding.set_mesh(mesh)
    tx = make_optimizer(args.optimizer)
    host_params = init_params()
    param_sh = fsdp_shardings(host_params, mesh)
    state_sh = state_shardings(tx, param_sh)
    data_sh = NamedSharding(mesh, PartitionSpec(AXIS))
    checkpointer = ocp.StandardCheckpointer()
    directory = pathlib.Path(args.dir).absolute()

    if args.start == 0:
        params = jax.tree.map(global_array, host_params, param_sh)
        opt_state = jax.jit(tx.init)(params)
        restored = "fresh start"
    else:
        abstract = jax.tree.map(
            lambda leaf, sh: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh),
            {"params": host_params, "opt_state": jax.eval_shape(tx.init, host_params)},
            {"params": param_sh, "opt_state": state_sh},
        )
        tree = checkpointer.restore(directory / f"step_{args.start}", abstract)
        params, opt_state = tree["params"], tree["opt_state"]
        restored = f"restored {directory / f'step_{args.start}'}"
    check_state_sharded_like_params(params, opt_state)
    check_state_laid_out(opt_state, state_sh)

    if lead:
        print(
            f"== {jax.process_count()} process(es) x {jax.local_device_count()} "
            f"CPU devices = {jax.device_count()} devices; {args.optimizer}; {restored}"
        )
        shapes = shard_shapes({"params": params, "mu": opt_state.mu})
        for name, param in params.items():
            print(
                f"   {name}: global {param.shape}, per device: param "
                f"{shapes['params'][name]}, mu/nu {shapes['mu'][name]}"
            )
        if args.optimizer == "soap":
            factors = opt_state.factors["blocks"]
            bases = opt_state.eigenbases["blocks"]
            print(
                f"   blocks' factors: global {factors.shape}, per device "
                f"{shard_shapes(factors)}; eigenbases: global {bases.shape}, "
                f"per device {shard_shapes(bases)}"
            )

    step_fn = jax.jit(
        lambda p, s, x, y: train_step(tx, p, s, x, y), donate_argnums=(0, 1)
    )
    for step in range(args.start + 1, args.stop + 1):
        x, y = batch(step)
        params, opt_state, loss = step_fn(
            params, opt_state, global_array(x, data_sh), global_array(y, data_sh)
        )
        if lead:
            print(f"step {step:4d}  loss {float(loss):.9g}", flush=True)

    check_state_sharded_like_params(params, opt_state)
    check_state_laid_out(opt_state, state_sh)
    # Every process writes its own shards; orbax coordinates the processes.
    path = directory / f"step_{args.stop}"
    checkpointer.save(path, {"params": params, "opt_state": opt_state})
    checkpointer.wait_until_finished()
    if lead:
        print(f"   saved {path}", flush=True)
    jax.distributed.shutdown()


# --- The launcher: spawns the workers of each phase. ------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def forward_output(worker: subprocess.Popen[str]) -> None:
    """Copies a worker's output to ours, less gloo's connection messages."""
    assert worker.stdout is not None
    for line in worker.stdout:
        if "peer ranks" not in line:  # "[Gloo] Rank 3 is connected to 7 peer ranks"
            sys.stdout.write(line)
            sys.stdout.flush()


def run_phase(
    processes: int,
    devices: int,
    start: int,
    stop: int,
    directory: str,
    timeout: float,
    optimizer: str = "adamw",
) -> None:
    """Runs one job of ``processes`` worker processes; fails if any worker fails.

    Args:
        processes: worker processes to start.
        devices: CPU devices of each process.
        start: the checkpointed step to resume from (0: a fresh start).
        stop: the last step to train and checkpoint.
        directory: the checkpoint folder, shared by all processes.
        timeout: seconds the whole job may take.
        optimizer: ``adamw`` or ``soap`` (see :func:`make_optimizer`).

    Raises:
        SystemExit: a worker exited with an error, or the job ran past
            ``timeout`` seconds (every worker is killed, none is left behind).
    """
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                f"--coordinator={coordinator}",
                f"--num-processes={processes}",
                f"--process-id={i}",
                f"--devices={devices}",
                f"--start={start}",
                f"--stop={stop}",
                f"--dir={directory}",
                f"--optimizer={optimizer}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    forwarders = [
        threading.Thread(target=forward_output, args=(w,), daemon=True) for w in workers
    ]
    for thread in forwarders:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while any(w.poll() is None for w in workers):
            failed = [w for w in workers if w.returncode not in (None, 0)]
            if failed:
                raise SystemExit(f"worker exited with status {failed[0].returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the workers ran past the {timeout:.0f} s timeout")
            time.sleep(0.05)
        codes = [w.returncode for w in workers]
        if any(codes):
            raise SystemExit(f"worker exit statuses {codes}")
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        for thread in forwarders:
            thread.join(timeout=5)


def launch(args: argparse.Namespace) -> None:
    """Trains on the first topology, then resumes on the second from its checkpoint."""
    directory = args.dir or tempfile.mkdtemp(prefix="distributed_example_")
    try:
        total = args.steps + args.resume_steps
        run_phase(
            args.processes,
            args.devices,
            0,
            args.steps,
            directory,
            args.timeout,
            args.optimizer,
        )
        run_phase(
            args.resume_processes,
            args.resume_devices,
            args.steps,
            total,
            directory,
            args.timeout,
            args.optimizer,
        )
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Multi-process FSDP training, checkpointed and resumed."
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--launch", action="store_true", help="run the whole demo")
    mode.add_argument("--worker", action="store_true", help="run one process")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--devices", type=int, default=4, help="CPU devices per process"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resume-processes", type=int, default=1)
    parser.add_argument("--resume-devices", type=int, default=2)
    parser.add_argument("--resume-steps", type=int, default=10)
    parser.add_argument("--dir", help="checkpoint folder (default: temporary)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase, s")
    parser.add_argument("--coordinator", help="worker: HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, help="worker: processes in job")
    parser.add_argument("--process-id", type=int, help="worker: this process's rank")
    parser.add_argument("--start", type=int, help="worker: step to resume from")
    parser.add_argument("--stop", type=int, help="worker: last step")
    args = parser.parse_args(argv)
    if args.worker:
        needed = ["coordinator", "num_processes", "process_id", "start", "stop", "dir"]
        missing = [name for name in needed if getattr(args, name) is None]
        if missing:
            flags = ", ".join("--" + name.replace("_", "-") for name in missing)
            parser.error(f"--worker needs {flags}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``--launch`` (the demo) or ``--worker`` (one process)."""
    args = parse_args(argv)
    if not args.worker:
        launch(args)
        return
    try:
        worker(args)
    except BaseException:
        # Exit at once: a normal exit would wait in jax.distributed's shutdown
        # barrier for the other processes, which wait for this one.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
