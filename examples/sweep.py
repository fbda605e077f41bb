"""A learning rate x weight decay grid of AdamW runs, trained as one jitted program.

``jaxopt_rules.sweep(jr.adamw, {"learning_rate": ..., "weight_decay": ...})``
turns N hyperparameter settings into one transform over parameters with a
leading axis of length N: the values are injected (they live in the optimizer
state), and the runs are ``jax.vmap``-ed. Here a 5 x 4 grid (20 runs) of the
quickstart's digits MLP trains, from the same initial parameters and on the
same fixed minibatch order, inside ONE ``jax.jit`` call (a ``lax.scan`` over
the steps), which compiles once. The same settings run one by one, each as
its own ``jr.adamw(...)`` program, compile once each. The script times both,
compares each sweep run with the same run alone, prints the grid of test
accuracies and losses, and saves it as a heatmap.

In float32 the two differ by rounding: the vmapped gradient's matmuls round
differently from the unbatched ones (by about 1e-8), and Adam amplifies that
where a gradient is near zero: final parameters differ by up to about 1e-5
relative after 10 steps, and training amplifies that further (after 300
steps, up to about 0.2 at the largest learning rate, while test losses still
agree to about 1e-3). With ``JAX_ENABLE_X64=1`` (float64) they agree to about
1e-15 after 10 steps.

Run: ``python examples/sweep.py`` (writes ``sweep.png`` in the current folder;
``--out PATH`` to write elsewhere, ``--steps N`` for a shorter run,
``--one-by-one K`` to run only K settings one by one). Needs ``matplotlib``
for the heatmap (without it the tables are still printed).
"""

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from quickstart import Params, forward, init_mlp, loss_fn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jaxopt_rules as jr


LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
WEIGHT_DECAYS = (0.0, 0.01, 0.1, 1.0)
BATCH_SIZE = 128

Data = tuple[jax.Array, ...]  # x_train, y_train, x_test, y_test, batch order


def load_data(steps: int, seed: int = 0) -> Data:
    """The quickstart's split; a fixed minibatch order, (steps, BATCH_SIZE) indices."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    rng = np.random.default_rng(seed)
    per_epoch = len(x_train) // BATCH_SIZE
    epochs = -(-steps // per_epoch)
    order = np.concatenate(
        [rng.permutation(len(x_train))[: per_epoch * BATCH_SIZE] for _ in range(epochs)]
    ).reshape(-1, BATCH_SIZE)[:steps]
    return tuple(jnp.asarray(a) for a in (x_train, y_train, x_test, y_test, order))


def test_metrics(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    """[test loss, test accuracy] of one run."""
    accuracy = jnp.mean(jnp.argmax(forward(params, x), axis=-1) == y)
    return jnp.stack([loss_fn(params, x, y), accuracy])


def make_fit(
    tx: optax.GradientTransformation, runs: int | None = None
) -> Callable[[Params, Data], tuple[Params, jax.Array]]:
    """A jitted training run: initial params, data -> final params, test metrics.

    With ``runs``, ``tx`` is a sweep: the initial parameters are broadcast to a
    leading axis of length ``runs``, gradients and metrics are vmapped over it,
    and every run sees the same minibatches.
    """
    grad_fn = jax.value_and_grad(loss_fn)
    metrics_fn = test_metrics
    if runs is not None:
        grad_fn = jax.vmap(grad_fn, in_axes=(0, None, None))
        metrics_fn = jax.vmap(metrics_fn, in_axes=(0, None, None))

    @jax.jit
    def fit(params: Params, data: Data) -> tuple[Params, jax.Array]:
        x_train, y_train, x_test, y_test, order = data
        if runs is not None:  # same init for every run
            params = jax.tree.map(
                lambda p: jnp.broadcast_to(p, (runs, *p.shape)), params
            )

        def step(carry: tuple[Params, Any], idx: jax.Array) -> tuple[Any, None]:
            params, state = carry
            _, grads = grad_fn(params, x_train[idx], y_train[idx])
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), order)
        return params, metrics_fn(params, x_test, y_test)

    return fit


def count_compiles() -> Callable[[], int]:
    """Starts counting XLA compilations; returns a function reading the count."""
    count = [0]

    def listener(event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    return lambda: count[0]


def largest_difference(a: Params, b: Params) -> float:
    """max |a - b| over a leaf, relative to the leaf's max |a|; the worst leaf."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, np.max(np.abs(x - y)) / (np.max(np.abs(x)) or 1.0))
    return float(worst)


def print_table(title: str, grid: np.ndarray, fmt: str) -> None:
    """One row per learning rate, one column per weight decay."""
    print(f"\n{title}: rows learning rate, columns weight decay")
    print(f"{'':>8}" + "".join(f"{wd:>8g}" for wd in WEIGHT_DECAYS))
    for lr, row in zip(LEARNING_RATES, grid, strict=True):
        print(f"{lr:>8g}" + "".join(f"{v:>8{fmt}}" for v in row))


def save_heatmap(accuracy: np.ndarray, loss: np.ndarray, out: str) -> None:
    """Test accuracy and loss over the grid, as a PNG (skipped without matplotlib)."""
    try:
        from matplotlib.figure import Figure  # no pyplot: a file, never a window
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[examples]'): no heatmap")
        return
    fig = Figure(figsize=(11, 4.5), layout="tight")
    panels = (("test accuracy", accuracy, "viridis"), ("test loss", loss, "viridis_r"))
    for ax, (title, values, cmap) in zip(fig.subplots(1, 2), panels, strict=True):
        image = ax.imshow(values, cmap=cmap)
        middle = (values.min() + values.max()) / 2
        for (i, j), value in np.ndenumerate(values):
            dark = (value > middle) == (cmap == "viridis")
            color = "black" if dark else "white"
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=color)
        ax.set_xticks(range(len(WEIGHT_DECAYS)), [f"{wd:g}" for wd in WEIGHT_DECAYS])
        ax.set_yticks(range(len(LEARNING_RATES)), [f"{lr:g}" for lr in LEARNING_RATES])
        ax.set(xlabel="weight decay", ylabel="learning rate", title=title)
        fig.colorbar(image, ax=ax)
    fig.suptitle("AdamW on digits: a 5 x 4 grid, trained as one jitted sweep")
    fig.savefig(out)
    print(f"heatmap in {out}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the grid as one sweep and one by one; returns the figures it prints."""
    parser = argparse.ArgumentParser(description="An AdamW grid as one jitted sweep.")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--out", default="sweep.png", help="heatmap PNG path")
    parser.add_argument(
        "--one-by-one",
        type=int,
        default=len(LEARNING_RATES) * len(WEIGHT_DECAYS),
        metavar="K",
        help="also run K settings of the grid one by one (default: all)",
    )
    args = parser.parse_args(argv)

    data = load_data(args.steps)
    params = init_mlp(jax.random.key(0), [64, 128, 64, 10])
    # The grid, flattened: run i is (learning_rates[i], weight_decays[i]).
    grid = [(lr, wd) for lr in LEARNING_RATES for wd in WEIGHT_DECAYS]
    learning_rates, weight_decays = (list(v) for v in zip(*grid, strict=True))
    tx = jr.sweep(
        jr.adamw, {"learning_rate": learning_rates, "weight_decay": weight_decays}
    )
    compiles = count_compiles()

    start, before = time.perf_counter(), compiles()
    fit = make_fit(tx, runs=len(grid))
    swept_params, metrics = jax.block_until_ready(fit(params, data))
    sweep_s, sweep_compiles = time.perf_counter() - start, compiles() - before
    print(
        f"sweep: {len(grid)} runs x {args.steps} steps, one jit call: "
        f"{sweep_compiles} compilation(s), {sweep_s:.2f} s"
    )

    # The same settings one by one: each jr.adamw(...) is a new program.
    start, before = time.perf_counter(), compiles()
    # K settings spread over the grid, its first and last included.
    picked = np.unique(np.linspace(0, len(grid) - 1, args.one_by_one).round())
    picked = [int(i) for i in picked]
    alone = [
        jax.block_until_ready(make_fit(jr.adamw(lr, weight_decay=wd))(params, data))
        for lr, wd in (grid[i] for i in picked)
    ]
    alone_s, alone_compiles = time.perf_counter() - start, compiles() - before
    print(
        f"one by one: {len(alone)} jr.adamw programs: "
        f"{alone_compiles} compilation(s), {alone_s:.2f} s"
    )
    worst_params = max(
        (
            largest_difference(run, jax.tree.map(lambda x, i=i: x[i], swept_params))
            for i, (run, _) in zip(picked, alone, strict=True)
        ),
        default=0.0,
    )
    worst_loss = max(
        (
            abs(float(m[0] - metrics[i, 0]))
            for i, (_, m) in zip(picked, alone, strict=True)
        ),
        default=0.0,
    )
    # float32: the batched gradients round differently (module docstring).
    print(
        f"sweep run vs the same run alone: final parameters differ by at most "
        f"{worst_params:.1e} (relative), test losses by {worst_loss:.1e}"
    )

    loss, accuracy = (np.asarray(m).reshape(len(LEARNING_RATES), -1) for m in metrics.T)
    print_table("test accuracy", accuracy, ".3f")
    print_table("test loss", loss, ".3f")
    best = np.unravel_index(np.argmax(accuracy), accuracy.shape)
    print(
        f"\nbest: learning rate {LEARNING_RATES[best[0]]:g}, weight decay "
        f"{WEIGHT_DECAYS[best[1]]:g}, test accuracy {accuracy[best]:.3f}"
    )
    save_heatmap(accuracy, loss, args.out)
    return {
        "accuracy": accuracy,
        "loss": loss,
        "sweep_compiles": sweep_compiles,
        "sweep_s": sweep_s,
        "alone_compiles": alone_compiles,
        "alone_s": alone_s,
        "params_difference": worst_params,
        "loss_difference": worst_loss,
    }


if __name__ == "__main__":
    main()
