"""Cautious updates: the components that disagree with the gradient are dropped."""

from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import describe_mismatch, is_hole


_DIRECTIONS = ("descent", "gradient")


def _cautious_leaf(update: Any, grad: Any, sign: int) -> Any:
    """One leaf: the kept components, scaled by ``size / (kept + 1)``.

    A complex leaf's real and imaginary parts are components of their own (as
    torch's ``view_as_real``): each is kept or dropped on its own.
    """
    if is_hole(update) or is_hole(grad):
        return update
    update = jnp.asarray(update)
    if not jnp.issubdtype(update.dtype, jnp.inexact):
        return update
    grad = jnp.asarray(grad).astype(update.dtype)
    is_complex = jnp.iscomplexobj(update)
    parts = (jnp.real(update), jnp.imag(update)) if is_complex else (update,)
    grad_parts = (jnp.real(grad), jnp.imag(grad)) if is_complex else (grad,)
    masks = [
        (sign * u * g > 0).astype(u.dtype)
        for u, g in zip(parts, grad_parts, strict=True)
    ]
    scale = sum(m.size for m in masks) / (sum(m.sum() for m in masks) + 1)
    kept = [u * (m * scale) for u, m in zip(parts, masks, strict=True)]
    return jax.lax.complex(*kept) if is_complex else kept[0]


def cautious(
    inner: optax.GradientTransformation,
    *,
    direction: Literal["descent", "gradient"] = "descent",
) -> optax.GradientTransformationExtraArgs:
    r"""Keeps the components of ``inner``'s update that agree with the gradient.

    For each leaf, with :math:`u` the update of ``inner`` and :math:`g` the
    gradient given to ``update``,

    .. math::

        \phi = \mathbb{1}[s\, u \odot g > 0], \qquad
        u' = u \odot \phi \cdot \frac{n}{\textstyle\sum \phi + 1},

    where :math:`n` is the leaf's number of (real) components and :math:`s`
    says which sign agrees: :math:`s = -1` for ``direction="descent"``, an
    update that is added to the parameters (a whole optax optimizer: its update
    points against the gradient), and :math:`s = +1` for
    ``direction="gradient"``, a direction that is subtracted later (a
    ``scale_by_*`` transform before the learning rate). The rescaling keeps the
    update's size when few components are dropped. A complex leaf's real and
    imaginary parts are components of their own; integer leaves and holes pass
    through. The state is ``inner``'s, unchanged.

    To drop components of the direction only, and not of a decoupled weight
    decay, wrap the direction (the C-Lion of the paper, as in the example).

    Args:
        inner: the transform whose updates are masked; extra arguments of
            ``update`` reach it.
        direction: ``"descent"`` (default) or ``"gradient"``, as above.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` with ``inner``'s state.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> c_lion = optax.chain(
        ...     jr.cautious(optax.scale_by_lion(b1=0.9, b2=0.99), direction="gradient"),
        ...     optax.add_decayed_weights(0.1),
        ...     optax.scale_by_learning_rate(1e-3),
        ... )
        >>> params = jnp.array([1.0, -2.0, 3.0, -4.0])
        >>> state = c_lion.init(params)
        >>> grads = jnp.array([1.0, 1.0, -1.0, -1.0])
        >>> updates, state = c_lion.update(grads, state, params)

    References:
        Liang, Chen, Liu and Liu, "Cautious Optimizers: Improving Training with
        One Line of Code", arXiv:2411.16085, 2024. Verified against
        ``pytorch_optimizer`` 4.1's ``cautious=True``, which scales by
        ``n / (sum(phi) + 1)``: its Lion, ADOPT and LaProp, as
        ``cautious(scale_by_lion(...), direction="gradient")`` chained with
        the decay and the step, ``cautious(jr.adopt(...))`` and
        ``cautious(jr.laprop(...))``. (Its AdEMAMix and MARS mask the first
        moment only, before the rest of the step is added: not a wrapper of
        the whole update.)
    """
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(
            f"cautious wraps an optax transform; got {type(inner).__name__}"
        )
    if direction not in _DIRECTIONS:
        raise ValueError(
            f"cautious: direction must be 'descent' or 'gradient', got {direction!r}"
        )
    sign = -1 if direction == "descent" else 1
    inner_ex = optax.with_extra_args_support(inner)

    def update_fn(
        updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        grads = updates
        new_updates, new_state = inner_ex.update(updates, state, params, **extra_args)
        if jax.tree.structure(new_updates, is_leaf=is_hole) != jax.tree.structure(
            grads, is_leaf=is_hole
        ):
            raise ValueError(
                "cautious: the inner transform's updates do not have the "
                f"gradients' tree structure: {describe_mismatch(grads, new_updates)}"
            )
        masked = jax.tree.map(
            lambda u, g: _cautious_leaf(u, g, sign), new_updates, grads, is_leaf=is_hole
        )
        return masked, new_state

    return optax.GradientTransformationExtraArgs(inner_ex.init, update_fn)
