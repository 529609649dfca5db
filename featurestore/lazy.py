"""Package attributes imported on first use, so that importing a package (and starting the
command line) loads pandas, Dask, Zarr or torch only once something needs them."""

from __future__ import annotations

import importlib
import sys
import types


class _LazyPackage(types.ModuleType):
    """A package whose exported names come from their modules on first access."""

    _lazy_exports: dict[str, str]

    def __getattr__(self, name: str):
        source = self.__dict__.get("_lazy_exports", {}).get(name)
        if source is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value) -> None:
        # Importing a submodule binds it on its package under its own name. Where a function
        # has that name (``featurestore.build``, ``training.train``), the function keeps it, as
        # it would after an eager ``from featurestore.build import build``.
        if (isinstance(value, types.ModuleType) and name in self._lazy_exports
                and value.__name__ == f"{self.__name__}.{name}"):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._lazy_exports))


def export_lazily(package: str, exports: dict[str, str]) -> None:
    """Give the package ``package`` the names of ``exports`` (name -> module that defines
    it), each imported when first used. Call it from the package's ``__init__``."""
    module = sys.modules[package]
    module.__dict__["_lazy_exports"] = dict(exports)
    module.__class__ = _LazyPackage
