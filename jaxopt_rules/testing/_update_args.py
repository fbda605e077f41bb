"""The extra arguments of ``update`` a rule needs, computed as a training loop would.

A rule may need more than the gradient: the loss value (Polyak step sizes,
MoMo, ``reduce_on_plateau``), or the loss function itself (a line search).
The kit knows the loss of every problem it runs, so it computes these at the
parameters each step, as a training loop computes ``value, grad =
jax.value_and_grad(loss)(params)``.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules.testing._problems import example_loss


Loss = Callable[[Any], jax.Array]

KNOWN: dict[str, str] = {
    "value": "the loss at the parameters",
    "value_fn": "the loss function",
    "obj_fn": "the loss function (optax's name for it in Hessian estimators)",
    "grad": "the gradient of the loss at the parameters",
    "logits_fn": (
        "a classifier's logits as a function of the parameters (for Hessian "
        "estimators that sample labels): the two-class logits (0, -loss)"
    ),
}
"""The update arguments the kit can compute, and what it passes for each."""

FUNCTIONS: frozenset[str] = frozenset({"value_fn", "obj_fn", "logits_fn"})
"""Those of :data:`KNOWN` that are functions of the parameters, not arrays."""


def two_class_logits(loss: Loss) -> Callable[[Any], jax.Array]:
    """The logits ``(0, -loss(params))`` of a model whose problem is ``loss``.

    The kit's problems are losses, not classifiers; a rule whose Hessian
    estimate samples labels from a model's logits (Sophia-G) is run on the
    model that puts probability ``sigmoid(-loss)`` on its second class. Its
    Gauss-Newton diagonal is ``p (1 - p) grad(loss)**2``: large where the
    loss is steep, as a curvature estimate should be.
    """

    def logits(params: Any) -> jax.Array:
        value = loss(params)
        return jnp.stack([jnp.zeros_like(value), -value])

    return logits


def declared_update_args(factory: Callable[..., Any]) -> tuple[str, ...]:
    """The ``update`` arguments a factory's rules declare (``rule(extra_args=)``).

    Factories not built with :func:`jaxopt_rules.rule` declare none; pass
    ``update_args=`` to the kit for those.
    """
    definition = getattr(factory, "definition", None)
    return tuple(getattr(definition, "extra_args", ()))


def check_known(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; a ``ValueError`` naming any the kit cannot compute."""
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        known = ", ".join(f"{k!r} ({v})" for k, v in KNOWN.items())
        raise ValueError(
            f"the kit cannot compute the update arguments {unknown}; it computes "
            f"{known}"
        )
    return tuple(names)


def loss_functions(names: Sequence[str], loss: Loss) -> dict[str, Any]:
    """Those of the ``update`` arguments ``names`` that are functions, for ``loss``.

    ``value_fn`` and ``obj_fn`` are ``loss`` itself; ``logits_fn`` is
    :func:`two_class_logits` of it. A training loop passes these as they are
    (functions are not batched by ``vmap`` nor traced as inputs).

    Example:
        >>> from jaxopt_rules import testing
        >>> sorted(testing.loss_functions(["value", "obj_fn"], testing.example_loss))
        ['obj_fn']
    """
    return {
        name: two_class_logits(loss) if name == "logits_fn" else loss
        for name in names
        if name in FUNCTIONS
    }


def update_args(names: Sequence[str], loss: Loss, params: Any) -> dict[str, Any]:
    """The keyword arguments ``names`` of ``update``, for ``loss`` at ``params``."""
    computed: dict[str, Any] = loss_functions(names, loss)
    for name in names:
        if name == "value":
            computed[name] = loss(params)
        elif name == "grad":
            # Integer leaves (a step counter) get float0 gradients, as in
            # a training loop's jax.grad(loss, allow_int=True).
            computed[name] = jax.grad(loss, allow_int=True)(params)
    return computed


def with_update_args(
    tx: optax.GradientTransformation,
    names: Sequence[str],
    loss: Loss = example_loss,
) -> optax.GradientTransformationExtraArgs:
    """``tx`` whose ``update`` computes the arguments ``names`` from ``loss``.

    For loops written for rules that need only the gradient: the wrapped
    ``update`` computes ``value`` (``loss(params)``), ``value_fn`` (``loss``)
    or ``grad`` (``jax.grad(loss)(params)``) at the parameters it is given.
    Arguments the caller passes win. With no ``names``, ``tx`` itself (with
    extra-argument support). Wrap the outermost transform: inside
    ``optax.masked`` the parameters a rule sees are a part of the tree, and
    the loss of a part is not the training loss.

    Args:
        tx: the transform.
        names: the arguments to compute (a rule's ``update_args``).
        loss: the loss of the parameters (default: :func:`example_loss`).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Raises:
        ValueError: a name the kit cannot compute.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> from jaxopt_rules import testing
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = testing.with_update_args(jr.polyak_sgd(), ["value"])
        >>> grads = testing.example_grads(params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> bool(jnp.all(jnp.isfinite(updates["w"])))
        True
    """
    names = check_known(names)
    tx = optax.with_extra_args_support(tx)
    if not names:
        return tx

    def update(
        updates: Any, state: Any, params: Any = None, **extra: Any
    ) -> tuple[Any, Any]:
        # An empty tree (``None`` at the root) is its own parameters.
        if params is None and jax.tree.leaves(updates):
            raise ValueError(
                f"the rule needs {list(names)} from the loss, so update needs params"
            )
        missing = [n for n in names if n not in extra]
        return tx.update(
            updates, state, params, **update_args(missing, loss, params), **extra
        )

    return optax.GradientTransformationExtraArgs(tx.init, update)


EXAMPLE_WEIGHTS: tuple[float, ...] = (0.5, 1.5)
"""The kit's examples of a gradient ``g`` for per-example rules: ``w * g``."""


def takes_per_example(factory: Callable[..., Any]) -> bool:
    """Whether the factory's ``update`` takes per-example gradients (DP-SGD)."""
    return bool(getattr(factory, "per_example", False))


def example_batch(grads: Any, weights: Sequence[float] = EXAMPLE_WEIGHTS) -> Any:
    """Per-example gradients made of ``grads``: ``w * g`` stacked on a new axis 0.

    Leaves that are not floating (integer counters, ``float0`` gradients) are
    repeated unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import testing
        >>> testing.example_batch({"w": jnp.array([2.0])})["w"]
        Array([[1.],
               [3.]], dtype=float32)
    """
    weights = tuple(float(w) for w in weights)

    def batch(g: Any) -> Any:
        dtype = jnp.result_type(g)
        if dtype == jax.dtypes.float0:
            return np.zeros((len(weights), *jnp.shape(g)), dtype)
        if not jnp.issubdtype(dtype, jnp.inexact):
            return jnp.stack([g] * len(weights))
        return jnp.stack([(w * g).astype(dtype) for w in weights])

    return jax.tree.map(batch, grads)


def fed_plain_gradients(
    tx: optax.GradientTransformation, factory: Callable[..., Any]
) -> optax.GradientTransformation:
    """``tx`` (made by ``factory``) taking plain gradients, whatever the rule.

    :func:`as_per_example` for a factory whose ``update`` takes per-example
    gradients (:func:`takes_per_example`), ``tx`` itself otherwise.

    Example:
        >>> import jaxopt_rules as jr
        >>> from jaxopt_rules import testing
        >>> tx = jr.adam(0.1)
        >>> testing.fed_plain_gradients(tx, jr.adam) is tx
        True
    """
    return as_per_example(tx) if takes_per_example(factory) else tx


def as_per_example(
    tx: optax.GradientTransformation, weights: Sequence[float] = EXAMPLE_WEIGHTS
) -> optax.GradientTransformationExtraArgs:
    """``tx`` (which takes per-example gradients) fed a batch made of each gradient.

    The batch is ``[w_1 g, ..., w_B g]`` (by default ``0.5 g`` and ``1.5 g``,
    whose mean is ``g``), so a per-example rule such as DP-SGD runs on the
    kit's problems and inside optax's wrappers like any other rule: every
    check compares it with itself on the same batches. Wrap the rule itself,
    inside ``optax.masked`` or ``optax.chain``, as a training loop computes
    per-example gradients for that rule only.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> from jaxopt_rules import testing
        >>> tx = testing.as_per_example(jr.dpsgd(1.0, 10.0, 0.0, seed=0))
        >>> params = {"w": jnp.zeros(2)}
        >>> tx.update({"w": jnp.ones(2)}, tx.init(params), params)[0]["w"]
        Array([-1., -1.], dtype=float32)
    """
    tx = optax.with_extra_args_support(tx)

    def update(
        updates: Any, state: Any, params: Any = None, **extra: Any
    ) -> tuple[Any, Any]:
        return tx.update(example_batch(updates, weights), state, params, **extra)

    return optax.GradientTransformationExtraArgs(tx.init, update)
