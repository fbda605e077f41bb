"""Saves every rule's trajectories, to prove a refactor changes no number.

Run once before a refactor of the core: ``python tests/make_trajectory_fixtures.py``;
``tests/test_bit_identical.py`` then replays each saved step (the saved state and
gradients in, the saved update and state out) and asks for the same bits.
``python tests/make_trajectory_fixtures.py --this-machine`` stores, beside the
fixture, the outputs another kind of machine computes from the same saved inputs
(XLA's CPU code differs by CPU model), so that the bits are asked for there too.

Covered: every catalog rule on every reference case, every torch_compat rule on
every case, in float32 and float64, plus bfloat16 slots, stochastic rounding and
8-bit quantized state for a few rules.
"""

import hashlib
import pathlib
import platform
import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from helpers import build

import jaxopt_rules as jr
from jaxopt_rules import torch_compat


STEPS = 6
HERE = pathlib.Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "trajectories.npz"


def machine() -> str:
    """What decides XLA's CPU code: the bits are compared only on the same one.

    XLA compiles for the host CPU model, not only its instruction sets: two
    Xeons with the same AVX-512, AVX2 and FMA flags (one of them family 6,
    model 207) gave 1-ulp differences in torch_compat's float32 Adam, AdamW and
    Adadelta steps, so the vendor, family and model are part of it, with every
    vector flag.
    """
    cpu = ""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (
                x.partition(":") for x in text.split("\n\n")[0].splitlines()
            )
        )
        flags = sorted(
            f
            for f in fields.get("flags", "").split()
            if f.startswith(("avx", "fma", "amx"))
        )
        model = "-".join(
            fields.get(k, "?") for k in ("vendor_id", "cpu family", "model")
        )
        cpu = f"{model}|{','.join(flags)}"
    except OSError:
        pass
    return f"{platform.machine()}|{cpu}|jax {jax.__version__}"


def params(dtype: Any, matrices: bool = False) -> dict[str, Any]:
    """The kit's tree shapes (2-d, 1-d, 4-d, scalar, an empty subtree), or matrices."""
    rng = np.random.default_rng(0)

    def leaf(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype)

    if matrices:
        return {
            "dense": {"w": leaf(3, 4), "b": leaf(1, 4)},
            "conv": [leaf(6, 2)],
            "scale": leaf(2, 2),
            "frozen": None,
        }
    return {
        "dense": {"w": leaf(3, 4), "b": leaf(4) * 3.0},
        "conv": [leaf(2, 3, 2, 2)],
        "scale": leaf(),
        "frozen": None,
    }


def grads(p: Any, k: int) -> Any:
    """A gradient of a parabola plus fixed noise of step ``k``."""
    rng = np.random.default_rng(100 + k)
    return jax.tree.map(
        lambda x: (1.5 * x + jnp.asarray(rng.normal(size=x.shape), x.dtype)).astype(
            x.dtype
        ),
        p,
    )


def cases() -> Iterator[tuple[str, Callable[[], Any], Any, bool]]:
    """(key, transform maker, dtype, matrices only) for every case."""
    for spec in jr.REGISTRY:
        if spec.update_args:
            continue  # needs the loss (MoMo, Polyak): pinned by test_reference
        for i, case in enumerate(spec.reference_cases):
            for dtype in ("float32", "float64") if i == 0 else ("float32",):
                yield (
                    f"rules.{spec.name}.{i}.{dtype}",
                    lambda s=spec, c=case: build(s.factory, **c),
                    dtype,
                    False,
                )
    for spec in torch_compat.REGISTRY:
        for i, case in enumerate(spec.cases):
            for dtype in ("float32", "float64") if i == 0 else ("float32",):
                yield (
                    f"torch.{spec.name}.{i}.{dtype}",
                    lambda s=spec, c=case: s.factory(**c),
                    dtype,
                    spec.matrices_only,
                )
    yield (
        "low.adam_bf16",
        lambda: jr.adam(1e-2, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
        "float32",
        False,
    )
    yield (
        "low.adamw_sr",
        lambda: jr.adamw(
            1e-2, mu_dtype=jnp.bfloat16, stochastic_rounding=True, rounding_seed=3
        ),
        "float32",
        False,
    )
    yield (
        "low.sgd_sr",
        lambda: jr.sgd(1e-2, momentum=0.9, stochastic_rounding=True),
        "float32",
        False,
    )
    for bits in (8, 4):
        for name in ("adam", "lion", "rmsprop"):
            spec = next(s for s in jr.REGISTRY if s.name == name)
            yield (
                f"quantized{bits}.{name}",
                lambda s=spec, b=bits: jr.quantized_state(
                    s.factory(**s.reference_cases[0]), bits=b, min_size=0, block_size=4
                ),
                "float32",
                False,
            )
    yield "flat.adam", lambda: jr.flat_leaves(jr.adam(1e-2)), "float32", False


def pack(trees: list[Any]) -> np.ndarray:
    """The bytes of every leaf of ``trees``, in order, as one array."""
    parts = [
        np.asarray(x).reshape(-1).view(np.uint8)
        for t in trees
        for x in jax.tree.leaves(t)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def unpack(data: np.ndarray, like: list[Any]) -> list[Any]:
    """The inverse of :func:`pack`, given trees of the same structure and dtypes."""
    out = []
    offset = 0
    for tree in like:
        leaves, treedef = jax.tree.flatten(tree)
        new = []
        for x in leaves:
            x = np.asarray(x)
            n = x.size * x.dtype.itemsize
            new.append(data[offset : offset + n].view(x.dtype).reshape(x.shape))
            offset += n
        out.append(treedef.unflatten(new))
    assert offset == data.size, "saved trajectory does not match the state layout"
    return out


def trajectory(make: Callable[[], Any], dtype: str, matrices: bool) -> np.ndarray:
    """A free run packed: per step the state, params and update; then the last state."""
    tx = make()
    p = params(jnp.dtype(dtype), matrices)
    state = tx.init(p)
    update = jax.jit(tx.update)
    trees: list[Any] = []
    for k in range(STEPS):
        u, new_state = update(grads(p, k), state, p)
        trees += [state, p, u]
        p = optax.apply_updates(p, u)
        state = new_state
    trees.append(state)
    return pack(trees)


def layout(tx: Any, dtype: str, matrices: bool) -> list[Any]:
    """Trees like a packed trajectory: state, params and update per step; state."""
    p0 = params(np.dtype(dtype), matrices)
    state0 = tx.init(p0)
    return [state0, p0, jax.tree.map(np.zeros_like, p0)] * STEPS + [state0]


def replay(
    make: Callable[[], Any], dtype: str, matrices: bool, saved: np.ndarray
) -> tuple[list[Any], list[Any]]:
    """Each saved step run again from its saved inputs (teacher-forced).

    Returns:
        ``(computed, expected)``: per step the update and the new state this
        machine computes from the saved state, parameters and gradients, and
        the saved ones, as flat lists of trees ``[u_0, state_1, u_1, ...]``.
    """
    tx = make()
    trees = unpack(saved, layout(tx, dtype, matrices))
    update = jax.jit(tx.update)
    computed, expected = [], []
    for k in range(STEPS):
        state, p, saved_u = trees[3 * k : 3 * k + 3]
        u, new_state = update(grads(p, k), state, p)
        computed += [u, new_state]
        expected += [saved_u, trees[3 * k + 3]]
    return computed, expected


def machine_fixture(name: str) -> pathlib.Path:
    """Where this machine's replayed outputs of the fixture are stored."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return HERE / "fixtures" / f"trajectories.{digest}.npz"


def main() -> None:
    """Writes the fixture, or (``--this-machine``) this machine's replay of it.

    The fixture is a free run of every case on the machine that writes it.
    ``--this-machine`` keeps that fixture and stores, beside it, the outputs
    this machine computes from each of its saved steps' inputs: the bits that
    ``test_bit_identical`` then asks for here. Write it only from code whose
    replay of the fixture passes the cross-machine check (the test does so).
    """
    if sys.argv[1:] == ["--this-machine"]:
        saved = np.load(FIXTURE)
        arrays: dict[str, np.ndarray] = {"machine": np.asarray(machine())}
        for key, make, dtype, matrices in cases():
            if key in saved.files:
                with jax.enable_x64(dtype == "float64"):
                    arrays[key] = pack(replay(make, dtype, matrices, saved[key])[0])
        path = machine_fixture(machine())
    else:
        arrays = {"machine": np.asarray(machine())}
        for key, make, dtype, matrices in cases():
            with jax.enable_x64(dtype == "float64"):
                arrays[key] = trajectory(make, dtype, matrices)
        path = FIXTURE
    np.savez_compressed(path, **arrays)
    print(f"{path}: {len(arrays)} arrays, machine {machine()}")


if __name__ == "__main__":
    main()
