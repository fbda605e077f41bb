"""``QuantizedArray`` in flax's serialization registry, without importing flax.

``flax.serialization.to_bytes`` / ``from_bytes`` (and linen ``TrainState``
checkpoints) walk a state through a registry of types; an unregistered
:class:`~jaxopt_rules.quantized.QuantizedArray` cannot be written. flax is
not a dependency of this package, so the registration happens when flax's
serialization module is there: at once if it is already imported, else the
moment it is imported (an import hook that removes itself afterwards).

A quantized array is written as its two arrays, ``{"codes", "scales"}``;
restoring needs a target state from ``tx.init`` (as every flax restore
does), which supplies the shape, dtype and map.
"""

import dataclasses
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from jaxopt_rules.quantized._blocks import QuantizedArray


_MODULE = "flax.serialization"
_lock = threading.Lock()
_registered = False


def _to_state_dict(q: QuantizedArray) -> dict[str, Any]:
    serialization = sys.modules[_MODULE]
    return {
        "codes": serialization.to_state_dict(q.codes),
        "scales": serialization.to_state_dict(q.scales),
    }


def _from_state_dict(target: QuantizedArray, state: dict[str, Any]) -> QuantizedArray:
    serialization = sys.modules[_MODULE]
    path = serialization.current_path()
    if not isinstance(state, dict) or set(state) != {"codes", "scales"}:
        raise ValueError(
            f"quantized_state: the checkpoint holds {type(state).__name__} at "
            f"{path!r} where the target has a QuantizedArray (codes and scales): "
            "was it saved from the same transform (bits, block_size, min_size)?"
        )
    arrays = {}
    for name in ("codes", "scales"):
        want = getattr(target, name)
        got = state[name]
        if tuple(np.shape(got)) != tuple(want.shape):
            raise ValueError(
                f"quantized_state: {name} at {path!r} has shape "
                f"{tuple(np.shape(got))} in the checkpoint, {tuple(want.shape)} "
                "in the target: saved with another bits, block_size or "
                "device count?"
            )
        arrays[name] = serialization.from_state_dict(want, got, name=name)
    return dataclasses.replace(target, **arrays)


def register_with_flax() -> bool:
    """Registers :class:`QuantizedArray` with flax if flax is imported.

    Returns:
        Whether it is registered now (idempotent).
    """
    global _registered
    serialization = sys.modules.get(_MODULE)
    if serialization is None or not hasattr(
        serialization, "register_serialization_state"
    ):
        return False
    with _lock:
        if not _registered:
            serialization.register_serialization_state(
                QuantizedArray, _to_state_dict, _from_state_dict, override=True
            )
            _registered = True
    return True


class _RegisteringLoader(importlib.abc.Loader):
    """Runs flax's own loader, then registers."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _uninstall()
        register_with_flax()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _FlaxImportHook(importlib.abc.MetaPathFinder):
    """Finds ``flax.serialization`` with the other finders; wraps its loader."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


_hook = _FlaxImportHook()


def _uninstall() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def install() -> None:
    """Registers now if flax is imported, else when it is."""
    if not register_with_flax() and _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
