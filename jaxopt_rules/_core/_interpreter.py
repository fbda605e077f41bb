"""A jaxpr interpreter that runs a rule per leaf: traced once, slots read as stored.

:class:`LeafRunner` calls the rule function for every leaf of one ``update``.
It traces the function to a jaxpr once per distinct leaf signature (shapes,
dtypes, static hyperparameter values) and evaluates that jaxpr for each leaf,
which does two things the plain Python call cannot:

* **Shared work once.** Equations that read only values shared by all leaves
  (hyperparameters, the step, global statistics), such as Adam's bias
  corrections ``1 - b1**t``, are evaluated once per update, not once per leaf.
  The plain call would re-run the rule's Python, and emit every equation,
  for every leaf (``benchmarks/leaf_batching.py`` counts them).
* **Low-precision slots read as stored.** A new slot that is stored in fewer
  bits than the compute dtype is rounded to its storage dtype as soon as it is
  computed, so everything downstream, the update included, reads the value
  that is stored, as ``torch.optim`` does with low-precision state. Computing
  the update from the unrounded value instead (optax's ``mu_dtype``) makes XLA
  recompute the moment inside the parameter update from the *old* slot, which
  the state update overwrites in place, so XLA copies every such slot into a
  parameter-sized temporary on every step (``benchmarks/step.py`` measures
  the difference). With stochastic rounding
  (``stochastic_rounding=True``) the rounding to bfloat16 is stochastic, with
  one key per (leaf, slot) and step.

Both are exact: the same primitives run on the same values.
"""

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from jaxopt_rules._core._report import Reports, collecting
from jaxopt_rules._core._rounding import stochastic_round_bf16


def _is_dynamic(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray | np.generic)


def _signature(leaf: Any) -> Hashable:
    aval = jax.typeof(leaf) if isinstance(leaf, jax.Array) else None
    weak = bool(getattr(aval, "weak_type", False))
    # (The sharding too: a rule may draw random numbers sharded like a leaf.)
    sharding = getattr(aval, "sharding", None)
    return (tuple(np.shape(leaf)), str(jnp.result_type(leaf)), weak, sharding)


class _Traced:
    """One traced signature: the jaxpr, which equations are shared, what to round."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        shared_inputs: Sequence[bool],
        storage: Sequence[Any],
    ) -> None:
        names: list[str] = []

        def with_reports(*args: Any) -> tuple[Any, list[Any]]:
            # What the rule reports becomes extra outputs of the jaxpr.
            with collecting() as reports:
                out = fn(*args)
            names[:] = [name for name, _ in reports]
            return out, [jnp.asarray(value) for _, value in reports]

        closed, (shape, _) = jax.make_jaxpr(with_reports, return_shape=True)(*args)
        self.jaxpr: jex.Jaxpr = closed.jaxpr
        self.consts = closed.consts
        self.report_names = tuple(names)
        leaves, self.out_tree = jax.tree.flatten(shape, is_leaf=lambda x: x is None)
        n_out = len([leaf for leaf in leaves if leaf is not None])
        self.out_is_none = [leaf is None for leaf in leaves]
        # Shared: computed only from shared inputs, constants and literals.
        shared = set(self.jaxpr.constvars)
        shared |= {
            v for v, s in zip(self.jaxpr.invars, shared_inputs, strict=True) if s
        }
        self.shared_eqns: set[int] = set()
        for k, eqn in enumerate(self.jaxpr.eqns):
            if not eqn.effects and all(
                isinstance(v, jex.Literal) or v in shared for v in eqn.invars
            ):
                self.shared_eqns.add(k)
                shared.update(eqn.outvars)
        # Which outputs every leaf shares (a per-tree slot must be one).
        self.out_shared = [
            isinstance(v, jex.Literal) or v in shared for v in self.jaxpr.outvars
        ]
        # Rounded: returned slots stored narrower than the compute dtype, when
        # the rule computes them (an input returned unchanged is already exact).
        produced = {v for eqn in self.jaxpr.eqns for v in eqn.outvars}
        self.rounded: dict[Any, tuple[Any, int]] = {}
        if isinstance(shape, tuple) and len(shape) == 1 + len(storage):
            outvars = iter(self.jaxpr.outvars[:n_out])
            for k, is_none in enumerate(self.out_is_none):
                if is_none:
                    continue
                var = next(outvars)
                dtype = storage[k - 1] if k >= 1 else None
                if (
                    dtype is not None
                    and not isinstance(var, jex.Literal)
                    and var in produced
                ):
                    self.rounded[var] = (dtype, k - 1)


class LeafRunner:
    """Calls a rule function leaf after leaf within one ``update``.

    Args:
        fn: the rule function, ``fn(grad, **kwargs)``.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._traced: dict[Hashable, _Traced] = {}
        self._shared_values: dict[tuple[Hashable, Any], Any] = {}
        self.last_shared: list[bool] | None = None
        """After a call: per leaf of what ``fn`` returned (flattened, ``None``
        counting as one), whether every leaf computes it alike: from shared
        inputs only. ``None`` when the function could not be traced."""

    def __call__(
        self,
        grad: Any,
        per_leaf: dict[str, Any],
        shared: dict[str, Any],
        storage: Sequence[Any],
        rounding: Sequence[Any] | None = None,
    ) -> tuple[Any, Reports]:
        """``fn(grad, **per_leaf, **shared)``, slots rounded to ``storage``.

        Args:
            grad: the gradient leaf, in the compute dtype.
            per_leaf: this leaf's slots, parameter and per-leaf hyperparameters.
            shared: values that are the same objects for every leaf of this
                compute dtype (hyperparameters, step, statistics).
            storage: per returned slot, its storage dtype when that is narrower
                than the compute dtype, else ``None``.
            rounding: per returned slot, a uint32 key to round it to bfloat16
                stochastically, or ``None`` to round to nearest (default: all
                to nearest).

        Returns:
            What ``fn`` returns, and what it reported (:func:`report`).
        """
        leaves, treedef = jax.tree.flatten((grad, per_leaf, shared))
        n_shared = len(jax.tree.leaves(shared))
        is_shared = [False] * (len(leaves) - n_shared) + [True] * n_shared
        dynamic = [i for i, leaf in enumerate(leaves) if _is_dynamic(leaf)]
        static = tuple(leaf for leaf in leaves if not _is_dynamic(leaf))
        try:
            key = (
                treedef,
                static,
                tuple(_signature(leaves[i]) for i in dynamic),
                tuple(map(str, storage)),
            )
            hash(key)
        except TypeError:  # an unhashable static value: trace this leaf alone
            key = None

        def traced_fn(*args: Any) -> Any:
            full = list(leaves)
            for i, arg in zip(dynamic, args, strict=True):
                full[i] = arg
            g, leaf_kwargs, shared_kwargs = jax.tree.unflatten(treedef, full)
            return self.fn(g, **leaf_kwargs, **shared_kwargs)

        args = [leaves[i] for i in dynamic]
        traced = self._traced.get(key) if key is not None else None
        if traced is None:
            try:
                traced = _Traced(
                    traced_fn, args, [is_shared[i] for i in dynamic], storage
                )
            except TypeError:
                # Outputs that are not arrays (a malformed rule): call it
                # directly so that the core reports what it returned.
                self.last_shared = None
                with collecting() as reports:
                    return traced_fn(*args), reports
            if key is not None:
                self._traced[key] = traced
        values = self._evaluate(traced, key, args, rounding)
        n_reports = len(traced.report_names)
        reported = values[len(values) - n_reports :]
        rest = iter(values[: len(values) - n_reports])
        out = [None if none else next(rest) for none in traced.out_is_none]
        flags = iter(traced.out_shared)
        self.last_shared = [
            True if none else next(flags) for none in traced.out_is_none
        ]
        return jax.tree.unflatten(traced.out_tree, out), list(
            zip(traced.report_names, reported, strict=True)
        )

    def _evaluate(
        self,
        traced: _Traced,
        key: Hashable,
        args: Sequence[Any],
        rounding: Sequence[Any] | None,
    ) -> list[Any]:
        jaxpr = traced.jaxpr
        env: dict[Any, Any] = {}

        def read(v: Any) -> Any:
            return v.val if isinstance(v, jex.Literal) else env[v]

        for v, value in zip(jaxpr.constvars, traced.consts, strict=True):
            env[v] = value
        for v, value in zip(jaxpr.invars, args, strict=True):
            env[v] = value
        for k, eqn in enumerate(jaxpr.eqns):
            cached = key is not None and k in traced.shared_eqns
            if cached and (key, eqn.outvars[0]) in self._shared_values:
                for v in eqn.outvars:
                    env[v] = self._shared_values[(key, v)]
                continue
            params = eqn.primitive.get_bind_params(eqn.params)
            subfuns: Sequence[Any] = ()
            if isinstance(params, tuple):  # older jax: (subfuns, params)
                subfuns, params = params
            with eqn.ctx.manager:
                out = eqn.primitive.bind(
                    *subfuns, *(read(v) for v in eqn.invars), **params
                )
            if not eqn.primitive.multiple_results:
                out = [out]
            for v, value in zip(eqn.outvars, out, strict=True):
                stored = traced.rounded.get(v)
                if stored is not None:
                    storage, slot = stored
                    noise_key = rounding[slot] if rounding is not None else None
                    if noise_key is not None:
                        # Exact in bfloat16 already; the round trip through
                        # the storage dtype lets XLA read the stored value
                        # (without it, it recomputed the rounding from the
                        # old slot and copied the slot first).
                        value = stochastic_round_bf16(value, noise_key)
                    value = value.astype(storage).astype(value.dtype)
                env[v] = value
                if cached:
                    self._shared_values[(key, v)] = value
        return [read(v) for v in jaxpr.outvars]
