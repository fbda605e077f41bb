"""The kit's reference comparison on rules written by a user, as a user would.

AdaBelief and Adan are written here from their papers with ``jr.rule`` and
compared with optax's implementations through the public functions only:

* hyperparameters are rounded to the compute dtype by default, so a correct
  float32 AdaBelief agrees with ``optax.adabelief`` within 1e-6 teacher-forced
  (with the floats as given, optax's double-precision ``1 - b2`` alone moves
  the second moment by about 1e-5);
* a slot the reference names differently (optax's Adan keeps the previous
  gradient in ``g``) is mapped with ``slot_names``, and without the map the
  error lists the reference state's fields and the map to pass.
"""

import re
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_rules as jr
from jaxopt_rules import testing


@jr.rule
def adabelief(
    grad: Any,
    mu: Any,
    nu: Any,
    step: Any,
    *,
    learning_rate: Any,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-16,
    eps_root: Any = 1e-16,
) -> Any:
    """AdaBelief (Zhuang et al. 2020, Algorithm 2): Adam on the belief ``g - m``.

    ``eps_root`` is added to the second moment (the paper's epsilon inside
    ``s_t``), ``eps`` to its root, as in optax.
    """
    mu = b1 * mu + (1 - b1) * grad
    nu = b2 * nu + (1 - b2) * (grad - mu) ** 2 + eps_root
    mu_hat = mu / (1 - b1**step)
    nu_hat = nu / (1 - b2**step)
    return -learning_rate * mu_hat / (jnp.sqrt(nu_hat) + eps), mu, nu


@jr.rule
def adan(
    grad: Any,
    m: Any,
    v: Any,
    n: Any,
    prev_grad: Any,
    step: Any,
    *,
    learning_rate: Any,
    b1: Any = 0.98,
    b2: Any = 0.92,
    b3: Any = 0.99,
    eps: Any = 1e-8,
    eps_root: Any = 1e-8,
) -> Any:
    """Adan (Xie et al. 2022, Algorithm 1), decays written as optax writes them.

    The gradient difference is zero on the first step.
    """
    diff = jnp.where(step == 1, jnp.zeros_like(grad), grad - prev_grad)
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * diff
    sq = grad + (1 - b2) * diff
    n = b3 * n + (1 - b3) * sq * sq
    m_hat = m / (1 - b1**step)
    v_hat = v / (1 - b2**step)
    n_hat = n / (1 - b3**step)
    direction = (m_hat + (1 - b2) * v_hat) / (jnp.sqrt(n_hat + eps_root) + eps)
    return -learning_rate * direction, m, v, n, grad


HYPERPARAMS = {"learning_rate": 1e-3}


def test_adabelief_from_the_paper_matches_optax_in_float32():
    worst = testing.teacher_forced_errors(adabelief, optax.adabelief, HYPERPARAMS)
    assert set(worst) == {"updates", "mu", "nu"}
    assert max(worst.values()) <= 1e-6, worst


def test_unrounded_hyperparameters_show_optax_double_precision():
    """With the floats as given, the second moment differs by the rounding."""
    worst = testing.teacher_forced_errors(
        adabelief, optax.adabelief, HYPERPARAMS, round_hyperparams=False
    )
    # measured 1.3e-5: optax's (1 - 0.999) in double vs 1 - float32(0.999)
    assert worst["nu"] > 1e-6, worst


def test_free_running_error_rounds_hyperparameters_by_default():
    rounded = testing.free_running_error(adabelief, optax.adabelief, HYPERPARAMS)
    as_given = testing.free_running_error(
        adabelief, optax.adabelief, HYPERPARAMS, round_hyperparams=False
    )
    # measured 3.0e-8 rounded and 1.4e-6 as given, after 100 float32 steps
    assert rounded <= 1e-7
    assert as_given > 1e-7


def test_a_slot_the_reference_names_differently_is_explained():
    message = (
        "cannot find the slot 'prev_grad' of the rule under test in the "
        "reference's state: it has no field 'prev_grad'. The reference's state "
        "has the fields m, v, n, g, t; shaped like the parameters and not "
        "matched to another slot: g. Pass slot_names="
    )
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        testing.teacher_forced_errors(adan, optax.adan, HYPERPARAMS, steps=1)
    assert "slot_names={'prev_grad': 'g'}" in str(error.value)


def test_adan_with_a_slot_map_matches_optax_adan_in_float32():
    worst = testing.teacher_forced_errors(
        adan, optax.adan, HYPERPARAMS, slot_names={"prev_grad": "g"}
    )
    assert set(worst) == {"updates", "m", "v", "n", "prev_grad"}
    assert max(worst.values()) <= 1e-6, worst


def test_slot_map_to_a_field_of_another_shape_is_refused():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "it has a field 't' (slot_names maps 'prev_grad' to 't'), but it is "
            "not shaped like the parameters"
        ),
    ):
        testing.teacher_forced_errors(
            adan, optax.adan, HYPERPARAMS, steps=1, slot_names={"prev_grad": "t"}
        )


def test_slot_map_naming_no_slot_is_refused():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "slot_names maps ['previous'], which are not slots of the rule under "
            "test; its slots are ['m', 'v', 'n', 'prev_grad']"
        ),
    ):
        testing.teacher_forced_errors(
            adan,
            optax.adan,
            HYPERPARAMS,
            steps=1,
            slot_names={"prev_grad": "g", "previous": "g"},
        )


def test_reference_arguments_reads_options_passed_through_kwargs():
    """A factory forwarding ``**options`` hands them on, rounded."""

    def my_adam(learning_rate: float, **options: Any) -> optax.GradientTransformation:
        return optax.adam(learning_rate, **options)

    kwargs = testing.reference_arguments(
        my_adam, optax.adam, {"learning_rate": 1e-3, "b1": 0.8}, np.float32
    )
    assert kwargs == {"learning_rate": np.float32(1e-3), "b1": np.float32(0.8)}
    assert all(type(v) is np.float32 for v in kwargs.values())
