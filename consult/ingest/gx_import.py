"""Import Great Expectations without the modules of expectation types this engine never writes.

``import great_expectations`` imports every expectation type, and one of them (``expect_column_kl_divergence_to_be
_less_than``, with two distribution metrics) imports ``altair`` and ``scipy.stats`` at module level, only to call
them inside its functions: 1.5-2 s of a 2.5-4 s import on this project's 2-core machine, paid by every ingest.
The suites :func:`consult.ingest.validation.build_suite` writes use none of them, so those two modules are
deferred: a placeholder stands in ``sys.modules`` and imports the real module the first time one of its names is
read (a committed suite with such an expectation still runs; it pays the import then).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Imported by Great Expectations at module level, used only inside the functions of expectation types and
# metrics the generated suites do not use (see the module docstring).
DEFERRED = ("altair", "scipy.stats")


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its names is read; then imports it and forwards to it."""

    def __getattr__(self, name: str) -> Any:
        # Dunder lookups (``__spec__``, ``__path__``...) come from the import machinery and from tools that
        # inspect modules; answering them must not import the module.
        if name.startswith("__"):
            raise AttributeError(name)
        real = self.__dict__.get("_deferred_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_deferred_real"] = real
        return getattr(real, name)


def import_great_expectations() -> types.ModuleType:
    """``great_expectations``, imported with :data:`DEFERRED` deferred (modules already imported stay as they are)."""
    if "great_expectations" not in sys.modules:
        for name in DEFERRED:
            if name not in sys.modules:
                sys.modules[name] = DeferredModule(name)
    import great_expectations

    return great_expectations
