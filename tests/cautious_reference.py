"""pytorch-optimizer's cautious optimizers on a fixed problem, and their fixture.

The problem: three float64 leaves (shapes (4, 3), (5,) and ()) with the
elementwise gradient ``g = a * w + b * cos(3 w)``, computed by hand on both
sides (no autograd), so the two runs differ only in the optimizer.
``python tests/cautious_reference.py`` (needs torch 2.13.0 and
pytorch-optimizer 4.1.0) rewrites tests/fixtures/cautious_lion.npz with
100 steps of ``pytorch_optimizer.Lion(..., cautious=True)`` per case, and of
``ADOPT`` and ``LaProp`` with ``cautious=True`` (``OTHERS``); the tests read
the file, so they need neither package.
"""

import pathlib

import numpy as np


FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "cautious_lion.npz"
SHAPES = ((4, 3), (5,), ())
STEPS = 100
CASES = (
    {"lr": 0.01, "b1": 0.9, "b2": 0.99, "weight_decay": 0.0},
    {"lr": 0.003, "b1": 0.8, "b2": 0.95, "weight_decay": 0.5},
)
OTHERS = {"ADOPT": {"lr": 0.01}, "LaProp": {"lr": 0.01}}
"""pytorch-optimizer classes with a ``cautious`` option, and their arguments."""


def problem() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Initial parameters and the gradient's coefficients a (> 0) and b."""
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=s) for s in SHAPES]
    a = [rng.uniform(0.5, 2.0, size=s) for s in SHAPES]
    b = [rng.normal(size=s) for s in SHAPES]
    return w0, a, b


def torch_trajectory(case: dict[str, float]) -> np.ndarray:
    """Cautious Lion's parameters after every step, stacked: (STEPS, n)."""
    return other_trajectory(
        "Lion",
        {
            "lr": case["lr"],
            "betas": (case["b1"], case["b2"]),
            "weight_decay": case["weight_decay"],
            "weight_decouple": True,
        },
    )


def other_trajectory(name: str, kwargs: dict[str, object]) -> np.ndarray:
    """``pytorch_optimizer.<name>(..., cautious=True)``'s parameters per step."""
    import pytorch_optimizer
    import torch

    w0, a, b = problem()
    params = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in w0]
    at = [torch.tensor(x) for x in a]
    bt = [torch.tensor(x) for x in b]
    opt = getattr(pytorch_optimizer, name)(
        params, **kwargs, cautious=True, foreach=False
    )
    rows = []
    for _ in range(STEPS):
        with torch.no_grad():
            for p, ai, bi in zip(params, at, bt, strict=True):
                p.grad = ai * p + bi * torch.cos(3 * p)
        opt.step()
        rows.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return np.stack(rows)


def main() -> None:
    arrays = {f"case{i}": torch_trajectory(c) for i, c in enumerate(CASES)}
    arrays.update({name: other_trajectory(name, k) for name, k in OTHERS.items()})
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez(FIXTURE, **arrays)


if __name__ == "__main__":
    main()
