"""Per-device bytes of 8-bit Adam state on a mesh, for many param shardings.

For each mesh (8 devices: an FSDP mesh ``8x1`` and a ``2x4`` data x model
mesh), each param shape and ``PartitionSpec``, and both ways of running
sharded code (``jax.jit`` on sharded inputs over automatic axes, ``init``
called outside jit; and explicit axes under ``jax.set_mesh``), the state of
``jaxopt_rules.quantized_state(jaxopt_rules.adam(1e-3), bits=8)`` is built
and stepped once, then measured from its actual shards
(``arr.addressable_shards``): the largest number of bytes any one device
holds, per parameter. The target is ``2.1 / N`` for ``N`` devices (float32
Adam state sharded over every device: ``8 / N``).

Usage::

    python -m benchmarks.sharded_state            # the full table (CPU, ~1 min)
"""

import argparse
import collections
import math
import os
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple


if __name__ == "__main__" and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jaxopt_rules as jr
from benchmarks import _table


TARGET = 2.1
"""Bytes per parameter of 8-bit Adam state, divided by the device count."""


class Case(NamedTuple):
    """One row: a mesh, a param shape and its sharding."""

    mesh: tuple[int, ...]
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    spec: P
    note: str


def cases() -> Iterator[Case]:
    """Every (mesh, shape, sharding) the table covers."""
    fsdp = ((8, 1), ("data", "model"))
    two_d = ((2, 4), ("data", "model"))
    both = ("data", "model")
    for mesh, axes in (fsdp, two_d):
        rows = [
            ((1024, 1024), P("data"), "leading axis on data"),
            ((1024, 1024), P(None, "model"), "trailing axis on model"),
            ((1024, 1024), P("data", "model"), "both axes"),
            ((1024, 1024), P(both), "leading axis on data x model"),
            ((1024, 1024), P(None, both), "trailing axis on data x model"),
            ((1024, 1024), P(), "replicated"),
            ((1000, 1000), P(None, "model"), "sizes not multiples of 256"),
            ((999, 1000), P(None, "model"), "leading size odd"),
            ((5003, 128), P(), "prime leading size"),
            ((3, 3, 64, 128), P(None, None, None, "model"), "conv kernel"),
            ((4096, 1), P("data"), "column"),
            ((1 << 20,), P(both), "vector"),
        ]
        for shape, spec, note in rows:
            if mesh == (8, 1) and "model" in str(spec) and "data" not in str(spec):
                continue  # a size-1 axis: the same as replicated
            yield Case(mesh, axes, shape, spec, note)


def per_device_bytes(tree: Any) -> int:
    """The most bytes any one device holds of ``tree``'s arrays."""
    held: collections.Counter[Any] = collections.Counter()
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return max(held.values())


def measure(case: Case, explicit: bool) -> float:
    """Per-device bytes per parameter of the state after one update."""
    axis_type = AxisType.Explicit if explicit else AxisType.Auto
    mesh = jax.make_mesh(case.mesh, case.axes, axis_types=(axis_type,) * 2)
    tx = jr.quantized_state(jr.adam(1e-3), bits=8)
    sharding = NamedSharding(mesh, case.spec)
    params = {"w": jax.device_put(jnp.zeros(case.shape), sharding)}
    grads = {"w": jax.device_put(jnp.ones(case.shape), sharding)}

    def run() -> Any:
        # Automatic axes: init outside jit, so it sees the params' shardings
        # (a jitted init there keeps one run of blocks, placed by XLA).
        state = jax.jit(tx.init)(params) if explicit else tx.init(params)
        _, state = jax.jit(tx.update)(grads, state, params)
        return state

    if explicit:
        with jax.set_mesh(mesh):
            state = run()
    else:
        state = run()
    # Only the moments: the step counts are scalars.
    moments = (state.inner.mu, state.inner.nu)
    return per_device_bytes(moments) / math.prod(case.shape)


def table() -> list[tuple[Case, float, float]]:
    """Each case's bytes per parameter, automatic and explicit axes."""
    return [(c, measure(c, False), measure(c, True)) for c in cases()]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    devices = jax.device_count()
    print(
        f"jaxopt_rules {jr.__version__}, jax {jax.__version__}, {devices} "
        f"{jax.devices()[0].platform} devices"
    )
    print("\n### 8-bit Adam state: most bytes on one device, per parameter\n")
    columns = ["mesh", "shape", "param sharding", "", "auto axes", "explicit axes"]
    print(_table.markdown_header([*columns, "target", "met"], "llllrrrl"))
    for case, auto, explicit in table():
        n = math.prod(case.mesh)
        target = TARGET / n
        met = "yes" if max(auto, explicit) <= target else "**no**"
        mesh = "x".join(map(str, case.mesh))
        numbers = [f"{auto:.4f}", f"{explicit:.4f}", f"{target:.4f}"]
        cells = [mesh, str(case.shape), str(case.spec), case.note, *numbers, met]
        print(_table.markdown_row(cells), flush=True)


if __name__ == "__main__":
    main()
