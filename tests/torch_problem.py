"""The torch_compat verification problem, shared by the tests and the fixture script.

A non-quadratic objective over three leaves of different ranks (1-d, 2-d,
3-d), with elementwise gradient ``c * (x - t) + 0.9 * cos(3 x)``, written out
for each framework so both compute the same numbers. Each side runs
``STEPS`` steps from the same start on its own parameters. With
``maximize=True`` both are handed the gradient of ``-f`` (so the run ascends
``-f``, a stable problem, instead of diverging on ``f``).
"""

import contextlib
import inspect
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


SHAPES = {"vec": (7,), "mat": (4, 5), "cube": (2, 3, 4)}
MATRIX_SHAPES = {"wide": (4, 6), "tall": (7, 3), "square": (5, 5)}
"""For algorithms on matrices only (Muon): wide, tall (transposed inside
Newton-Schulz) and square."""
STEPS = 100


def shapes_for(spec: Any) -> dict[str, tuple[int, ...]]:
    """The leaves a torch_compat spec or an ``AuthorsReference`` is verified on."""
    return MATRIX_SHAPES if getattr(spec, "matrices_only", False) else SHAPES


Probe = tuple[int, int]
"""``(batch, every)``: the Hessian probe of a reference with ``probe_batch``."""


def probe_for(reference: Any, ours: dict[str, Any], factory: Any) -> Probe | None:
    """The probe a comparison with ``reference`` needs (``None``: none).

    ``every`` is the rule's ``update_interval`` in ``ours`` (else its default).
    """
    batch = getattr(reference, "probe_batch", None)
    if batch is None:
        return None
    default = inspect.signature(factory).parameters["update_interval"].default
    return batch, int(ours.get("update_interval", default))


def probe_gradient(x: Any, c: Any, t: Any, sin: Any) -> Any:
    """The second gradient fed to a Hessian estimate (Sophia-G's sampled labels')."""
    return c * sin(2 * x + t)


def problem(
    seed: int, shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Start, curvature and target per leaf, in float64."""
    rng = np.random.RandomState(seed)
    out: dict[str, dict[str, np.ndarray]] = {"init": {}, "c": {}, "t": {}}
    for name, shape in (shapes or SHAPES).items():
        out["init"][name] = rng.normal(size=shape)
        out["c"][name] = rng.uniform(0.5, 2.0, size=shape)
        out["t"][name] = rng.normal(size=shape)
    return out


def run_jax(
    factory: Any,
    kwargs: dict[str, Any],
    data: dict[str, Any],
    dtype: Any,
    evaluate: Any = None,
    probe: Probe | None = None,
) -> dict[str, np.ndarray]:
    """Final parameters after ``STEPS`` jitted steps of ``factory(**kwargs)``.

    With ``evaluate``, ``evaluate(state, params)`` instead: the parameters to
    evaluate the model at (a schedule-free run's average). With ``probe``
    (``(batch, every)``), the rule's ``hessian_diagonal_fn`` returns
    ``batch * probe_gradient**2`` (it is called on the steps that refresh).
    """
    import jax
    import jax.numpy as jnp
    import optax

    with jax.enable_x64(dtype == np.float64):
        cast = {
            k: {n: jnp.asarray(v, dtype) for n, v in d.items()} for k, d in data.items()
        }
        if probe is not None:

            def estimate(updates: Any, state: Any, params: Any = None, **_: Any):
                del updates
                out = {
                    n: probe_gradient(x, cast["c"][n], cast["t"][n], jnp.sin)
                    for n, x in params.items()
                }
                return {n: probe[0] * g * g for n, g in out.items()}, state

            kwargs = {
                **kwargs,
                "hessian_diagonal_fn": optax.GradientTransformationExtraArgs(
                    lambda params: optax.EmptyState(), estimate
                ),
            }
        tx = factory(**kwargs)

        sign = -1.0 if kwargs.get("maximize") else 1.0

        def grads(params: Any) -> Any:
            return {
                n: sign * (cast["c"][n] * (x - cast["t"][n]) + 0.9 * jnp.cos(3 * x))
                for n, x in params.items()
            }

        @jax.jit
        def step(params: Any, state: Any) -> tuple[Any, Any]:
            updates, state = tx.update(grads(params), state, params)
            return optax.apply_updates(params, updates), state

        params = cast["init"]
        state = tx.init(params)
        for _ in range(STEPS):
            params, state = step(params, state)
        if evaluate is not None:
            params = evaluate(state, params)
        return {n: np.asarray(x, np.float64) for n, x in params.items()}


def optimizer_class(name: str) -> Any:
    """``torch.optim.<name>``, or the class at a dotted path (an authors' package)."""
    import torch

    if "." not in name:
        return getattr(torch.optim, name)
    return _attribute(name)


def _attribute(path: str) -> Any:
    """The object at a dotted path (``package.module.name``).

    The import's deprecation warnings are the package's and torch's to fix
    (kron-torch's ``torch.compile`` decorators import torch's inductor,
    which warns): they are ignored.
    """
    import importlib
    import warnings

    module, _, attribute = path.rpartition(".")
    if module.startswith("timm."):
        _timm_without_its_init()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(importlib.import_module(module), attribute)


def _timm_without_its_init() -> None:
    """Lets ``timm.optim.<module>`` import without running timm's ``__init__``.

    timm's package imports torchvision, whose PyPI wheels beside the CPU
    torch 2.13.0 do not load; its optimizers' modules need only torch. The
    two packages are registered as empty packages at their folders (timm is
    installed with ``pip install --no-deps timm==1.0.31``).
    """
    import importlib.machinery
    import importlib.util
    import sys
    import types

    found = importlib.util.find_spec("timm")
    if found is None or found.submodule_search_locations is None:
        raise ModuleNotFoundError("timm is not installed")
    folder = next(iter(found.submodule_search_locations))
    for name, path in (("timm", folder), ("timm.optim", f"{folder}/optim")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [path]
            package.__spec__ = importlib.machinery.ModuleSpec(
                name, None, is_package=True
            )
            package.__spec__.submodule_search_locations = [path]
            sys.modules[name] = package


def run_torch(
    torch_class: str,
    kwargs: dict[str, Any],
    data: dict[str, Any],
    dtype: Any,
    evaluate: bool = False,
    probe: Probe | None = None,
    shares_draws: bool = False,
) -> dict[str, np.ndarray]:
    """Final parameters after ``STEPS`` steps of ``torch_class`` (see above).

    Optimizers with train and eval modes (the authors' ``schedulefree``) are
    put in train mode first; with ``evaluate``, in eval mode at the end, so
    the parameters returned are their evaluation point. With ``probe``
    (``(batch, every)``), each step is ``step(bs=batch)`` and after every
    ``every``-th the optimizer's ``update_hessian()`` reads
    ``probe_gradient`` from ``.grad``, as the authors' Sophia-G loop does
    with its sampled-label gradient. With ``shares_draws``, the optimizer
    draws the rule's random numbers (:data:`SHARED_DRAWS`).
    """
    import torch

    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    # Optimizers that draw random numbers (ScalableShampoo's power
    # iteration starts from torch.randn) draw the same ones on every run.
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        params = {
            n: torch.tensor(v, dtype=torch_dtype, requires_grad=False)
            for n, v in data["init"].items()
        }
        c = {n: torch.tensor(v, dtype=torch_dtype) for n, v in data["c"].items()}
        t = {n: torch.tensor(v, dtype=torch_dtype) for n, v in data["t"].items()}
        options = dict(kwargs)
        cls = optimizer_class(torch_class)
        if "foreach" in inspect.signature(cls).parameters:  # (Muon has none)
            options.setdefault("foreach", False)
        # Optimizers that read parameter names (Adam-mini) get them, renamed
        # by the case's "named_parameters" mapping where it has one.
        # (Adam-mini skips parameters that do not require gradients.)
        names = options.pop("named_parameters", None)
        if "named_parameters" in inspect.signature(cls).parameters:
            for x in params.values():
                x.requires_grad_(True)
            named = [((names or {}).get(n, n), x) for n, x in params.items()]
            optimizer = cls(named, **options)
        else:
            optimizer = cls(list(params.values()), **options)
        if hasattr(optimizer, "train"):
            optimizer.train()
        sign = -1.0 if kwargs.get("maximize") else 1.0
        draws = (
            SHARED_DRAWS[torch_class](optimizer, list(params), data["init"], dtype)
            if shares_draws
            else contextlib.nullcontext(lambda step: None)
        )
        with draws as before_step:
            for step in range(STEPS):
                with torch.no_grad():
                    for n, x in params.items():
                        x.grad = sign * (c[n] * (x - t[n]) + 0.9 * torch.cos(3 * x))
                before_step(step)
                if probe is None:
                    optimizer.step()
                    continue
                optimizer.step(bs=probe[0])
                if (step + 1) % probe[1] == 0:
                    with torch.no_grad():
                        for n, x in params.items():
                            x.grad = probe_gradient(x, c[n], t[n], torch.sin)
                    optimizer.update_hessian()
        if evaluate:
            optimizer.eval()
        return {n: x.detach().numpy().astype(np.float64) for n, x in params.items()}
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def _kron_torch_with_psgd_kron_draws(
    optimizer: Any, names: list[str], init: dict[str, np.ndarray], dtype: Any
) -> Iterator[Callable[[int], None]]:
    """kron-torch's ``Kron``, handed ``jr.psgd_kron``'s draws (default seed).

    kron-torch draws each leaf's probe with ``torch.randn_like`` in its
    preconditioner fit and its balance coin from ``optimizer.rng``
    (``random.Random(42)``, one draw a step). Here its module's ``torch``
    is a stand-in whose ``randn_like`` returns the rule's probe of that leaf
    at that step (in the order the optimizer visits the leaves, reshaped to
    its merged shape), and ``rng.random()`` the rule's uniform coin draw:
    both computed as the rule computes them, in the run's precision. Its
    ``torch.compile`` decorators run eagerly (TorchDynamo off for the run).
    """
    import types

    import jax
    import jax.numpy as jnp
    import torch
    from kron_torch import kron

    import jaxopt_rules as jr
    from jaxopt_rules._core import initial_key, random_like
    from jaxopt_rules.rules._psgd_kron import _split_for_probes, step_draws

    seed = inspect.signature(jr.psgd_kron).parameters["seed"].default
    order = sorted(names)  # the rule's leaves, in tree order
    pending: list[np.ndarray] = []
    coin = types.SimpleNamespace(value=1.0)

    def before_step(step: int) -> None:
        check()
        with jax.enable_x64(dtype == np.float64):
            key, uniform = step_draws(initial_key(seed), step)
            _, keys = _split_for_probes(key, len(order))
            probes = {  # (drawn like the rule's: shaped and typed like the leaf)
                n: np.asarray(random_like(k, jnp.zeros(init[n].shape, dtype)))
                for n, k in zip(order, keys, strict=True)
            }
        pending[:] = [probes[n] for n in names]
        coin.value = float(uniform)

    def check() -> None:
        # A step draws every leaf's probe (a refit) or none.
        assert len(pending) in (0, len(names)), "the probes are out of step"

    def randn_like(g: Any, **_: Any) -> Any:
        probe = pending.pop(0)
        assert probe.size == g.numel(), "the probes are out of step"
        return torch.tensor(probe.reshape(tuple(g.shape)), dtype=g.dtype)

    class StandIn:  # torch, but for randn_like
        def __getattr__(self, name: str) -> Any:
            return randn_like if name == "randn_like" else getattr(torch, name)

    stand_in = StandIn()
    optimizer.rng = types.SimpleNamespace(random=lambda: coin.value)
    original = kron.torch
    kron.torch = stand_in
    try:  # (silencing its report of the state's size)
        with (
            torch._dynamo.config.patch(disable=True),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            yield before_step
    finally:
        kron.torch = original
    check()


SHARED_DRAWS: dict[str, Callable[..., Any]] = {
    "kron_torch.kron.Kron": _kron_torch_with_psgd_kron_draws,
}
"""How a reference with ``shares_draws`` is handed the rule's draws, by its
optimizer: a context manager of ``(optimizer, leaf names in its order,
initial leaves, dtype)`` giving the hook called before each step."""


def _jax_reference(path: str) -> Any:
    """The factory at a dotted path of an authors' JAX package.

    psgd-jax 0.2.9 imports ``optax._src.clipping``, which optax 0.2.8 moved
    to ``optax.transforms._clipping``; it uses nothing from it, so the moved
    module is registered under the old name before the import.
    """
    import sys

    import optax._src
    import optax.transforms._clipping as clipping

    sys.modules.setdefault("optax._src.clipping", clipping)
    optax._src.clipping = clipping  # pyright: ignore[reportAttributeAccessIssue]
    return _attribute(path)


def run_reference(
    reference: Any,
    theirs: dict[str, Any],
    data: dict[str, Any],
    dtype: Any,
    evaluate: bool = False,
    probe: Probe | None = None,
) -> dict[str, np.ndarray]:
    """Final parameters of the authors' code (``jr.AuthorsReference``) on ``data``.

    A torch optimizer runs in :func:`run_torch`; an authors' JAX package's
    factory (``framework="jax"``) in :func:`run_jax`, its printing silenced.
    """
    if getattr(reference, "framework", "torch") == "jax":
        factory = _jax_reference(reference.optimizer)
        with contextlib.redirect_stdout(io.StringIO()):
            return run_jax(factory, dict(theirs), data, dtype)
    theirs = dict(theirs)
    if reference.dtype_args:
        import torch

        precision = torch.float64 if dtype == np.float64 else torch.float32
        theirs.update(dict.fromkeys(reference.dtype_args, precision))
    return run_torch(
        reference.optimizer,
        theirs,
        data,
        dtype,
        evaluate,
        probe=probe,
        shares_draws=reference.shares_draws,
    )


def evaluates(reference: Any) -> bool:
    """Whether the reference has an eval mode (the authors' schedule-free)."""
    if getattr(reference, "framework", "torch") != "torch":
        return False
    return hasattr(optimizer_class(reference.optimizer), "eval")


def relative_error(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> float:
    """``max |actual - expected| / max |expected|`` over all leaves."""
    diff = max(float(np.max(np.abs(actual[n] - expected[n]))) for n in expected)
    scale = max(float(np.max(np.abs(expected[n]))) for n in expected)
    return diff / scale
