"""Test configuration: 8 virtual CPU devices, so the sharding checks run."""

import jax


# Must happen before JAX initialises its backend (at the first computation).
jax.config.update("jax_num_cpu_devices", 8)
