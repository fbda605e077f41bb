"""The quickstart's training loop, with optimizer telemetry from inside jit.

A logging decorator around a Python ``step`` method runs once, when JAX traces
the step, and never again. ``jaxopt_rules.log_step`` instead wraps the
optimizer: the jitted step computes the statistics on device and, every
``every`` steps, hands them to the host through ``jax.debug.callback``. Here
the records go to a JSON-lines file (each line readable as soon as it is
written, so the file can be watched during training) and to a small printer
that shows a compact table. After training, the per-leaf gradient norms are
read back from the file and plotted, one line per leaf: a record's per-leaf
keys are ``grad_norm/<leaf path>``, e.g. ``grad_norm/layer_0/w``. (The file is
not called ``logging.py``: in this folder that name would shadow the standard
library's ``logging`` for every script.)

Run: ``python examples/step_logging.py`` (writes ``optimizer_steps.jsonl`` and
``optimizer_steps.png`` in the current folder; pass a ``.jsonl`` path to write
elsewhere). Needs ``matplotlib`` for the plot.
"""

import json
import pathlib
import sys
from typing import Any

import jax
import numpy as np
import optax
from matplotlib.figure import Figure  # no pyplot: a file, never a window
from quickstart import forward, init_mlp, loss_fn
from sklearn.datasets import load_digits

import jaxopt_rules as jr


def print_row(record: dict[str, Any]) -> None:
    """A compact table row per record."""
    if record["step"] == 0:
        print(f"{'step':>6} {'grad norm':>10} {'update/param':>13} {'non-finite':>10}")
    print(
        f"{record['step']:6d} {record['grad_norm']:10.4f} "
        f"{record['update_param_ratio']:13.2e} {len(record['nonfinite']):10d}"
    )


def read_leaf_norms(path: str | pathlib.Path) -> dict[str, tuple[list, list]]:
    """Per-leaf gradient norms from a JSON-lines file: leaf -> (steps, norms)."""
    series: dict[str, tuple[list, list]] = {}
    for line in pathlib.Path(path).read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            statistic, _, leaf = key.partition("/")
            if statistic == "grad_norm" and leaf:
                steps, norms = series.setdefault(leaf, ([], []))
                steps.append(record["step"])
                norms.append(value)
    return series


def plot_leaf_norms(
    series: dict[str, tuple[list, list]], out: str | pathlib.Path
) -> None:
    """Saves one line per leaf (gradient norm against step, log scale) to ``out``."""
    fig = Figure(figsize=(7, 4), layout="tight")
    ax = fig.subplots()
    for leaf, (steps, norms) in sorted(series.items()):
        ax.plot(steps, norms, marker="o", label=leaf)
    ax.set(xlabel="step", ylabel="gradient norm", yscale="log")
    ax.set_title("Per-leaf gradient norms (read back from the JSON-lines file)")
    ax.legend(fontsize="small", ncol=2)
    fig.savefig(out)


def main(path: str = "optimizer_steps.jsonl", epochs: int = 5, every: int = 50) -> list:
    """Trains the digits MLP with a logged optimizer; returns the JSON records."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    params = init_mlp(jax.random.key(0), [64, 128, 64, 10])
    tx = jr.log_step(
        optax.chain(optax.clip_by_global_norm(1.0), jr.sgd(0.05, momentum=0.9)),
        every=every,
        per_leaf=True,  # grad_norm/layer_0/w, grad_norm/layer_0/b, ...
        # append=False: this run's records only (by default a file is continued).
        sinks=[jr.JsonLinesSink(path, append=False), print_row],
    )
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        grads = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(0)
    with tx:  # closes the sinks (and drains pending records) at the end
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for b in range(len(x) // 64):
                idx = order[b * 64 : (b + 1) * 64]
                params, opt_state = train_step(params, opt_state, x[idx], y[idx])
    accuracy = float((forward(params, x).argmax(-1) == y).mean())
    figure = pathlib.Path(path).with_suffix(".png")
    plot_leaf_norms(read_leaf_norms(path), figure)
    print(f"train accuracy {accuracy:.3f}; records in {path}; plot in {figure}")
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


if __name__ == "__main__":
    main(*sys.argv[1:2])
