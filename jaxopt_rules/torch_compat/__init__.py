"""torch-exact rules: ``torch.optim`` algorithms as optax transforms.

Each factory takes the torch class's arguments, names and defaults (``lr``,
``betas``, ``weight_decay``, ``maximize``, ...) and returns an optax transform
such that ``optax.apply_updates(params, updates)`` reproduces
``optimizer.step()`` on the same gradients (verified over 100-step
trajectories against torch 2.13 on CPU: ``tests/test_torch_compat.py``).
Pass ``params`` to ``update`` (every factory but ``rprop`` reads them, as
torch's step does).

Execution flags: ``foreach``, ``fused``, ``capturable`` and ``differentiable``
choose how torch runs a step (multi-tensor kernels, one fused kernel, CUDA-graph
capture, autograd through ``step``). Under XLA a step is always one compiled
program and always differentiable, so they cannot change the numbers. Each
factory accepts those its torch class takes, with torch's defaults, so torch
recipes port unchanged, and ignores them; a value other than ``None`` or a
bool is a ``TypeError`` naming the flag.

Example:
    >>> import jax.numpy as jnp, optax
    >>> from jaxopt_rules import torch_compat
    >>> tx = torch_compat.sgd(lr=0.1, momentum=0.9, dampening=0.1)
    >>> params = {"w": jnp.array([1.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update(params, state, params)
    >>> optax.apply_updates(params, updates)["w"]
    Array([0.9], dtype=float32)
"""

from jaxopt_rules.torch_compat._adadelta import adadelta as adadelta
from jaxopt_rules.torch_compat._adafactor import adafactor as adafactor
from jaxopt_rules.torch_compat._adagrad import adagrad as adagrad
from jaxopt_rules.torch_compat._adam import adam as adam, adamw as adamw
from jaxopt_rules.torch_compat._adamax import adamax as adamax
from jaxopt_rules.torch_compat._asgd import asgd as asgd
from jaxopt_rules.torch_compat._muon import muon as muon
from jaxopt_rules.torch_compat._nadam import nadam as nadam
from jaxopt_rules.torch_compat._radam import radam as radam
from jaxopt_rules.torch_compat._registry import (
    REGISTRY as REGISTRY,
    TorchSpec as TorchSpec,
)
from jaxopt_rules.torch_compat._rmsprop import rmsprop as rmsprop
from jaxopt_rules.torch_compat._rprop import rprop as rprop
from jaxopt_rules.torch_compat._sgd import sgd as sgd
