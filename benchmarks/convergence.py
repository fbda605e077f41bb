"""Convergence of the registered rules on four small, download-free tasks.

Tasks (fixed seeds, each rule with the same data order and initialisation):

* ``digits``: a 64-128-10 MLP on scikit-learn's 8x8 handwritten digits
  (minibatches of 64; loss: train cross-entropy, also test accuracy);
* ``charlm``: a 2-layer causal transformer (d=64, 4 heads, context 64) that
  predicts the next byte of Python standard-library source text (the files
  named in ``LM_SOURCES``, read from this interpreter's stdlib: nothing is
  downloaded; loss: held-out cross-entropy in nats per byte);
* ``quadratic``: ``0.5 * sum(l_i * x_i**2)`` in 100 dimensions with ``l_i``
  log-spaced over [1, 1e4] (condition number 1e4), from ``x = 1``;
* ``rosenbrock``: ``(1 - x)**2 + 100 * (y - x**2)**2`` from (-1.2, 1).

Prints a table of final loss, steps to reach the task's target loss and wall
time, and saves one loss-curve plot per task (PNG; needs matplotlib, the
``benchmarks`` extra). Learning rates are per rule and task (``LEARNING_RATES``),
picked once by hand to be reasonable, not tuned per rule to win.

The task functions (``TASKS``, :func:`train`) are importable, so other
benchmarks (quantized state, say) train the same tasks with the same seeds.

Usage::

    python -m benchmarks.convergence                       # all rules, all tasks
    python -m benchmarks.convergence --tasks digits charlm --rules adam lion
    python -m benchmarks.convergence --quick               # a quarter of the steps
    python -m benchmarks.convergence --plots benchmarks/plots
"""

import argparse
import dataclasses
import pathlib
import sys
import sysconfig
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxopt_rules as jr
from benchmarks import _table
from jaxopt_rules import testing


# ---------------------------------------------------------------------------
# Tasks


@dataclasses.dataclass
class Task:
    """A training problem: params, a per-step loss on a batch, an eval loss."""

    name: str
    steps: int
    target: float  # "steps to target" is the first evaluation at or below this
    eval_every: int
    init: Callable[[jax.Array], Any]
    batch: Callable[[int], Any]  # step -> batch (numpy, deterministic)
    loss: Callable[[Any, Any], jax.Array]  # (params, batch) -> scalar
    eval_loss: Callable[[Any], jax.Array]  # params -> scalar (the reported loss)
    extra: Callable[[Any], dict[str, float]] = lambda params: {}
    # (params, batch) -> the model's logits on the batch, for Hessian
    # estimates that sample labels (Sophia-G's logits_fn); None: no classifier
    logits: Callable[[Any, Any], jax.Array] | None = None


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits scaled to [0, 1], shuffled: 1437 to train, 360 held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def _classifier(
    name: str,
    logits: Callable[[Any, jax.Array], jax.Array],
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    batches: np.ndarray,
    *,
    held_out: bool,
    **schedule: Any,
) -> Task:
    """A cross-entropy task on ``data`` (train x, y, held-out x, y).

    ``held_out``: report the held-out loss instead of the training loss;
    ``schedule``: the Task's ``init``, ``steps``, ``target`` and ``eval_every``.
    """
    x_train, y_train, x_test, y_test = data

    def loss(params: Any, batch: Any) -> jax.Array:
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(
            logits(params, x), y
        ).mean()

    def accuracy(params: Any) -> dict[str, float]:
        return {"test_acc": float((logits(params, x_test).argmax(-1) == y_test).mean())}

    reported = (x_test, y_test) if held_out else (x_train, y_train)
    return Task(
        name=name,
        batch=lambda step: (x_train[batches[step]], y_train[batches[step]]),
        loss=loss,
        eval_loss=lambda params: loss(params, reported),
        extra=accuracy,
        logits=lambda params, batch: logits(params, batch[0]),
        **schedule,
    )


def digits_task() -> Task:
    """MLP on scikit-learn's digits; reported loss: train cross-entropy."""

    def init(key: jax.Array) -> Any:
        k1, k2 = jax.random.split(key)
        return {
            "hidden": {
                "w": jax.random.normal(k1, (64, 128)) * jnp.sqrt(2 / 64),
                "b": jnp.zeros(128),
            },
            "out": {
                "w": jax.random.normal(k2, (128, 10)) * jnp.sqrt(2 / 128),
                "b": jnp.zeros(10),
            },
        }

    def logits(params: Any, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
        return h @ params["out"]["w"] + params["out"]["b"]

    batches = np.random.default_rng(1).integers(0, 1437, size=(4000, 64))
    return _classifier(
        "digits",
        logits,
        _digits(),
        batches,
        init=init,
        steps=1000,
        target=0.05,
        eval_every=25,
        held_out=False,
    )


def conv_task() -> Task:
    """A small CNN on scikit-learn's digits as 8x8 images; held-out cross-entropy.

    Two 3x3 convolutions (1 -> 16 channels, then 16 -> 32 with stride 2),
    global average pooling and a linear layer: 5,130 parameters, batches of
    32, 300 steps. The reported loss is the cross-entropy on the 360 held-out
    images (target 0.15), so a rule is ranked by how fast it generalises,
    not by how far it drives the training loss down.
    """

    def init(key: jax.Array) -> Any:
        k1, k2, k3 = jax.random.split(key, 3)
        return {
            "conv1": {
                "w": jax.random.normal(k1, (3, 3, 1, 16)) * jnp.sqrt(2 / 9),
                "b": jnp.zeros(16),
            },
            "conv2": {
                "w": jax.random.normal(k2, (3, 3, 16, 32)) * jnp.sqrt(2 / 144),
                "b": jnp.zeros(32),
            },
            "out": {
                "w": jax.random.normal(k3, (32, 10)) * jnp.sqrt(1 / 32),
                "b": jnp.zeros(10),
            },
        }

    def conv(x: jax.Array, layer: Any, stride: int) -> jax.Array:
        # A 'SAME' convolution as one matmul over the 3x3 patches: the numbers
        # of lax.conv_general_dilated, and under jax.vmap over runs (each with
        # its own kernel) 2.6x faster on XLA:CPU, whose grouped convolution
        # in the kernel's gradient took most of the leaderboard's time.
        kh, kw, c_in, c_out = layer["w"].shape
        pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), "SAME")
        padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        h, w = (-(-n // stride) for n in x.shape[1:3])  # (ceil)
        patches = jnp.concatenate(
            [
                padded[
                    :,
                    i : i + stride * (h - 1) + 1 : stride,
                    j : j + stride * (w - 1) + 1 : stride,
                ]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )
        y = patches @ layer["w"].reshape(kh * kw * c_in, c_out)
        return jax.nn.relu(y + layer["b"])

    def logits(params: Any, x: jax.Array) -> jax.Array:
        images = x.reshape(-1, 8, 8, 1)
        h = conv(conv(images, params["conv1"], 1), params["conv2"], 2)
        return h.mean(axis=(1, 2)) @ params["out"]["w"] + params["out"]["b"]

    batches = np.random.default_rng(2).integers(0, 1437, size=(4000, 32))
    return _classifier(
        "conv",
        logits,
        _digits(),
        batches,
        init=init,
        steps=300,
        target=0.15,
        eval_every=25,
        held_out=True,
    )


LM_SOURCES = (
    "textwrap.py",
    "argparse.py",
    "difflib.py",
    "pprint.py",
    "fractions.py",
    "heapq.py",
)
LM_CONTEXT = 64


def stdlib_text(max_bytes: int = 400_000) -> bytes:
    """Source text of a few standard-library modules, as bytes."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    parts = [
        (root / name).read_bytes() for name in LM_SOURCES if (root / name).exists()
    ]
    if not parts:
        raise FileNotFoundError(f"none of {LM_SOURCES} found under {root}")
    return b"\n".join(parts)[:max_bytes]


def charlm_task() -> Task:
    """A small causal transformer on stdlib bytes; reported loss: held-out nats/byte."""
    data = np.frombuffer(stdlib_text(), dtype=np.uint8).astype(np.int32)
    split = int(0.9 * len(data))
    train, held = data[:split], data[split:]
    d, heads, layers, vocab, batch = 64, 4, 2, 256, 32
    starts = np.random.default_rng(2).integers(
        0, len(train) - LM_CONTEXT - 1, size=(4000, batch)
    )
    held_starts = np.random.default_rng(3).integers(
        0, len(held) - LM_CONTEXT - 1, size=64
    )
    held_batch = np.stack([held[s : s + LM_CONTEXT + 1] for s in held_starts])

    def init(key: jax.Array) -> Any:
        keys = iter(jax.random.split(key, 4 + 4 * layers))
        normal = lambda shape, scale: scale * jax.random.normal(next(keys), shape)
        params: dict[str, Any] = {
            "embed": normal((vocab, d), 0.02),
            "pos": normal((LM_CONTEXT, d), 0.02),
            "final_norm": jnp.ones(d),
        }
        for i in range(layers):
            params[f"block{i}"] = {
                "norm1": jnp.ones(d),
                "qkv": normal((d, 3 * d), d**-0.5),
                "proj": normal((d, d), (2 * layers * d) ** -0.5),
                "norm2": jnp.ones(d),
                "up": normal((d, 4 * d), d**-0.5),
                "down": normal((4 * d, d), (2 * layers * 4 * d) ** -0.5),
            }
        return params

    def norm(x: jax.Array, scale: jax.Array) -> jax.Array:
        return scale * x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)

    def forward(params: Any, tokens: jax.Array) -> jax.Array:
        t = tokens.shape[-1]
        x = params["embed"][tokens] + params["pos"][:t]
        mask = jnp.tril(jnp.ones((t, t), bool))
        for i in range(layers):
            p = params[f"block{i}"]
            q, k, v = jnp.split(norm(x, p["norm1"]) @ p["qkv"], 3, axis=-1)
            split = lambda a: a.reshape(*a.shape[:-1], heads, d // heads)
            att = jnp.einsum("bqhc,bkhc->bhqk", split(q), split(k)) / jnp.sqrt(
                d // heads
            )
            att = jax.nn.softmax(jnp.where(mask, att, -1e9), axis=-1)
            out = jnp.einsum("bhqk,bkhc->bqhc", att, split(v)).reshape(x.shape)
            x = x + out @ p["proj"]
            x = x + jax.nn.gelu(norm(x, p["norm2"]) @ p["up"]) @ p["down"]
        return norm(x, params["final_norm"]) @ params["embed"].T

    def loss(params: Any, batch: Any) -> jax.Array:
        logits = forward(params, batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, batch[:, 1:]
        ).mean()

    return Task(
        name="charlm",
        steps=1000,
        target=2.2,
        eval_every=50,
        init=init,
        batch=lambda step: np.stack(
            [train[s : s + LM_CONTEXT + 1] for s in starts[step]]
        ),
        loss=loss,
        eval_loss=lambda params: loss(params, held_batch),
        logits=lambda params, batch: forward(params, batch[:, :-1]),
    )


def quadratic_task() -> Task:
    """Ill-conditioned quadratic, condition number 1e4."""
    scales = jnp.logspace(0, 4, 100)
    loss = lambda params, batch: 0.5 * jnp.sum(scales * params["x"] ** 2)
    return Task(
        name="quadratic",
        steps=2000,
        target=1e-3,
        eval_every=20,
        init=lambda key: {"x": jnp.ones(100)},
        batch=lambda step: None,
        loss=loss,
        eval_loss=lambda params: loss(params, None),
    )


def rosenbrock_task() -> Task:
    """Rosenbrock's banana from (-1.2, 1)."""
    loss = lambda params, batch: (
        (1 - params["x"][0]) ** 2 + 100 * (params["x"][1] - params["x"][0] ** 2) ** 2
    )
    return Task(
        name="rosenbrock",
        steps=3000,
        target=1e-3,
        eval_every=20,
        init=lambda key: {"x": jnp.array([-1.2, 1.0])},
        batch=lambda step: None,
        loss=loss,
        eval_loss=lambda params: loss(params, None),
    )


TASKS: dict[str, Callable[[], Task]] = {
    "digits": digits_task,
    "conv": conv_task,
    "charlm": charlm_task,
    "quadratic": quadratic_task,
    "rosenbrock": rosenbrock_task,
}

# Per task, per rule. Rules missing here use the task's "default". The first
# eight were set by hand; for the rules added with optax parity, where the
# default diverged or stalled, the best final loss of a scan over
# {1e-5, 1e-4, ..., 1} (one seed).
# Rules that set their own step size (DoG, DoWG, Prodigy, D-Adaptation) and
# the MoMo rules (which cap it) run at optax's default on every task (not
# scanned); schedule-free SGD runs at SGD's rates, schedule-free AdamW at the
# task's default.
# SM3 runs at AdaGrad's rates (on vectors it is AdaGrad). Adadelta runs at
# 1.0, Zeiler's rule (optax's default, learning_rate=None, steps uphill; see
# jr.adadelta). Noisy SGD runs at SGD's rates (optax's default noise), and so
# does DP-SGD (clip 1, noise multiplier 0.5, momentum 0.9).
PARAMETER_FREE: dict[str, float] = {
    "dog": 1.0,
    "dowg": 1.0,
    "prodigy": 1.0,
    "dadapt_adamw": 1.0,
    "momo": 1.0,
    "momo_adam": 1e-2,
    "adadelta": 1.0,
    "lbfgs": 1.0,  # the direction's own scale; its line search picks the step
}
LEARNING_RATES: dict[str, dict[str, float]] = {
    "digits": {
        "default": 3e-3,
        **PARAMETER_FREE,
        "sgd": 0.1,
        "noisy_sgd": 0.1,
        "dpsgd": 0.1,
        "schedule_free_sgd": 0.1,
        "adagrad": 0.05,
        "sm3": 0.05,
        "lion": 1e-4,
        "normalized_sgd": 0.05,
        "lamb": 1e-2,
        "sign_sgd": 1e-4,
        "signum": 1e-4,
        "optimistic_gradient_descent": 0.1,
        "lars": 1.0,
        "fromage": 1e-2,
        "cocob": 1.0,
        "polyak_sgd": 1.0,
        "adafactor": 1e-2,
        "simplified_ademamix": 1e-4,
        "acprop": 1e-5,
        "radam": 1e-2,
        "rprop": 1e-2,
    },
    "charlm": {
        "default": 3e-3,
        **PARAMETER_FREE,
        "sgd": 0.3,
        "noisy_sgd": 0.3,
        "dpsgd": 0.3,
        "schedule_free_sgd": 0.3,
        "adagrad": 0.05,
        "sm3": 0.05,
        "lion": 3e-4,
        "normalized_sgd": 0.1,
        "lamb": 1e-2,
        "sign_sgd": 3e-4,
        "signum": 3e-4,
        "optimistic_gradient_descent": 0.3,
        "lars": 1.0,
        "fromage": 1e-2,
        "cocob": 1.0,
        "polyak_sgd": 1.0,
        "adafactor": 1e-2,
        "simplified_ademamix": 1e-4,
        "acprop": 1e-5,
        "rprop": 1e-2,
    },
    "quadratic": {
        "default": 1e-2,
        **PARAMETER_FREE,
        "sgd": 1.5e-4,
        "noisy_sgd": 1.5e-4,
        "dpsgd": 1.5e-4,
        "schedule_free_sgd": 1.5e-4,
        "adagrad": 0.5,
        "sm3": 0.5,
        "lion": 1e-3,
        "normalized_sgd": 1e-2,
        "lamb": 1e-2,
        "sign_sgd": 1e-3,
        "signum": 1e-3,
        "optimistic_gradient_descent": 1e-5,
        "lars": 1.0,
        "fromage": 1.0,
        "cocob": 1.0,
        "polyak_sgd": 1.0,
        "adafactor": 1e-2,
        "simplified_ademamix": 1e-5,
        "acprop": 1.0,
        "radam": 1e-4,
    },
    "rosenbrock": {
        "default": 1e-2,
        **PARAMETER_FREE,
        "sgd": 1e-3,
        "noisy_sgd": 1e-3,
        "dpsgd": 1e-3,
        "schedule_free_sgd": 1e-3,
        "adagrad": 0.5,
        "sm3": 0.5,
        "lion": 1e-3,
        "normalized_sgd": 1e-2,
        "lamb": 1e-2,
        "sign_sgd": 1e-3,
        "signum": 1e-3,
        "optimistic_gradient_descent": 1e-3,
        "lars": 1.0,
        "fromage": 1e-2,
        "cocob": 1.0,
        "polyak_sgd": 1.0,
        "adafactor": 1e-2,
        "simplified_ademamix": 1e-4,
        "acprop": 1e-2,
        "radam": 1e-3,
    },
}
# The CNN on the same digits starts its sweeps where the MLP's tuned rates are.
LEARNING_RATES["conv"] = dict(LEARNING_RATES["digits"])
# Fixed extra hyperparameters per rule (the rest are the rule's defaults).
RULE_KWARGS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9},
    # Examples clipped to norm 1, noise 0.5 of it (a moderate privacy budget).
    "dpsgd": {"l2_norm_clip": 1.0, "noise_multiplier": 0.5, "seed": 0, "momentum": 0.9},
    # Roots by the coupled Newton iteration (matrix products only): with
    # eigh roots, the CNN's five-run sweep, whose (3, 3, 16, 32) kernel is one
    # (144, 32) matrix, stops with every XLA:CPU thread waiting (jaxlib
    # 0.10.2; one run, the MLP, or unmerged axes run).
    "shampoo": {"root_method": "newton"},
}
# The argument that LEARNING_RATES sets, for rules without ``learning_rate``.
RATE_ARGS: dict[str, str] = {"polyak_sgd": "max_learning_rate"}


def make_optimizer(rule: str, task: str) -> optax.GradientTransformation:
    """The registered rule with this task's learning rate."""
    spec = next(s for s in jr.REGISTRY if s.name == rule)
    rates = LEARNING_RATES.get(task, {"default": 1e-3})
    lr = rates.get(rule, rates["default"])
    rate_arg = RATE_ARGS.get(rule, "learning_rate")
    return spec.factory(**{rate_arg: lr}, **RULE_KWARGS.get(rule, {}))


def update_args(rule: str) -> tuple[str, ...]:
    """What the rule's ``update`` reads besides the gradient (``"value"``)."""
    return next(s for s in jr.REGISTRY if s.name == rule).update_args


# ---------------------------------------------------------------------------
# Training


@dataclasses.dataclass
class Result:
    """One training run."""

    task: str
    label: str
    steps: list[int]
    losses: list[float]
    wall_s: float
    target: float
    extra: dict[str, float]

    @property
    def final(self) -> float:
        """The last evaluated loss."""
        return self.losses[-1]

    @property
    def steps_to_target(self) -> int | None:
        """First evaluated step at or below the target, or None."""
        return next(
            (
                s
                for s, x in zip(self.steps, self.losses, strict=True)
                if x <= self.target
            ),
            None,
        )


def per_example_grads(loss: Callable[..., Any], params: Any, batch: Any) -> Any:
    """The gradient of each example of ``batch`` (a batch of one when it is None)."""
    if batch is None:
        return jax.tree.map(lambda g: g[None], jax.grad(loss)(params, None))

    def one(example: Any) -> Any:
        return jax.grad(loss)(params, jax.tree.map(lambda a: a[None], example))

    return jax.vmap(one)(batch)


def train(
    task: Task,
    tx: optax.GradientTransformation,
    label: str,
    *,
    seed: int = 0,
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    update_args: tuple[str, ...] = (),
    per_example: bool = False,
) -> Result:
    """Trains ``task`` with ``tx``; evaluates every ``task.eval_every`` steps.

    ``update_args=("value",)`` passes the minibatch loss to ``tx.update``
    (rules that read the loss, such as Polyak step sizes); ``"obj_fn"`` and
    ``"value_fn"`` pass the minibatch loss as a function of the parameters
    (Sophia's Hessian estimate, L-BFGS's line search), ``"grad"`` its
    gradient. ``per_example`` passes one gradient per example (DP-SGD).
    """
    steps = steps or task.steps
    params = task.init(jax.random.key(seed))
    state = tx.init(params)
    unknown = set(update_args) - {"value", "grad", "value_fn", "obj_fn", "logits_fn"}
    if "logits_fn" in update_args and task.logits is None:
        raise NotImplementedError(f"{label}: {task.name} has no logits to sample")
    if unknown:
        raise NotImplementedError(f"{label}: train cannot pass {sorted(unknown)}")

    @jax.jit
    def step(params: Any, state: Any, batch: Any) -> tuple[Any, Any]:
        value, grads = jax.value_and_grad(task.loss)(params, batch)
        if per_example:  # DP-SGD: one gradient per example of the minibatch
            grads = per_example_grads(task.loss, params, batch)
        extra: dict[str, Any] = {"value": value} if "value" in update_args else {}
        if "grad" in update_args:  # L-BFGS's line search
            extra["grad"] = grads
        for name in {"value_fn", "obj_fn"}.intersection(update_args):
            extra[name] = lambda p: task.loss(p, batch)
        if "logits_fn" in update_args:  # Sophia-G's sampled labels
            logits = task.logits
            assert logits is not None
            extra["logits_fn"] = lambda p: logits(p, batch)
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    eval_loss = jax.jit(task.eval_loss)
    history_steps, history = [0], [float(eval_loss(params))]
    start = time.perf_counter()
    for i in range(steps):
        params, state = step(params, state, task.batch(i))
        if (i + 1) % task.eval_every == 0 or i + 1 == steps:
            history_steps.append(i + 1)
            history.append(float(eval_loss(params)))
            if progress is not None and (
                (i + 1) % (task.eval_every * 8) == 0 or i + 1 == steps
            ):
                progress(f"step {i + 1}/{steps} loss {history[-1]:.4g}")
    wall = time.perf_counter() - start
    return Result(
        task.name, label, history_steps, history, wall, task.target, task.extra(params)
    )


# ---------------------------------------------------------------------------
# Output


def print_table(results: list[Result]) -> None:
    """Final loss, steps to target and wall time per run, as Markdown."""
    columns = ["task", "rule", "final loss", "target", "steps to target", "wall s"]
    print(_table.markdown_header([*columns, "extra"], "llrrrrl"))
    for r in results:
        extra = ", ".join(f"{k} {v:.3f}" for k, v in r.extra.items())
        reached = "not reached" if r.steps_to_target is None else str(r.steps_to_target)
        numbers = [f"{r.final:.4g}", f"{r.target:g}", reached, f"{r.wall_s:.1f}"]
        print(_table.markdown_row([r.task, r.label, *numbers, extra]))


def save_plots(results: list[Result], folder: pathlib.Path) -> list[pathlib.Path]:
    """One PNG of loss curves per task; returns the paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed (pip install -e '.[benchmarks]'): no plots",
            file=sys.stderr,
        )
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in dict.fromkeys(r.task for r in results):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for r in (r for r in results if r.task == task):
            ax.plot(r.steps, r.losses, label=r.label, linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(task)
        ax.axhline(
            next(r.target for r in results if r.task == task),
            color="gray",
            linestyle=":",
            linewidth=0.8,
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"convergence_{task}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--rules", nargs="*", help="rule names (default: all registered)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps")
    parser.add_argument(
        "--plots", type=pathlib.Path, default=pathlib.Path("benchmarks/plots")
    )
    args = parser.parse_args()
    names = [s.name for s in jr.REGISTRY]
    rules = args.rules or names
    unknown = sorted(set(rules) - set(names))
    if unknown:
        parser.error(f"unknown rules {unknown}; registered: {', '.join(names)}")
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, "
        f"jaxopt_rules {jr.__version__}, seed {args.seed}"
    )
    results = []
    runs = [(t, r) for t in args.tasks for r in rules]
    for k, (task_name, rule) in enumerate(runs, 1):
        task = TASKS[task_name]()
        steps = max(task.steps // 4, task.eval_every) if args.quick else task.steps
        tag = f"[{k}/{len(runs)}] {task_name} {rule}"
        progress = lambda msg, tag=tag: print(
            f"  {tag}: {msg}", file=sys.stderr, flush=True
        )
        results.append(
            train(
                task,
                make_optimizer(rule, task_name),
                rule,
                seed=args.seed,
                steps=steps,
                progress=progress,
                update_args=update_args(rule),
                per_example=testing.takes_per_example(
                    next(s for s in jr.REGISTRY if s.name == rule).factory
                ),
            )
        )
    print()
    print_table(results)
    for path in save_plots(results, args.plots):
        print(f"saved {path}")


if __name__ == "__main__":
    main()
