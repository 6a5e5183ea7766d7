"""The worker processes of the local Ray that ``mlpsweep run`` starts: Ray's own worker, without
the optional libraries Ray imports into every worker only to register serializers for them.

Each Ray process, as it makes its serialization context, imports pyarrow (for Ray Data's Arrow
tables), pydantic (for pydantic v1's model fields) and starlette (for Ray Serve's app state)
where they are installed — MLflow installs all three — to register serializers a sweep's
workers never use: ~0.2 CPU-seconds in each worker before its first trial (bench/README.md,
session 23). :class:`SkipRaySerializerImports` turns those three imports away, only when Ray's
registration asks (``ray.util.serialization_addons.apply``) and the process has not imported
them already: Ray then registers nothing for them, as where they are not installed; any other
import of them works as usual.

The raylet runs this file by path (no package import) in place of Ray's ``default_worker.py``,
with the same arguments; it runs that file as ``__main__``.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import runpy
import sys
from typing import Any, Sequence

SKIPPED = ("pyarrow", "pydantic", "starlette")  # top-level packages Ray's serializer registration imports
REGISTRATION = os.path.join("ray", "util", "serialization_addons.py")


class SkipRaySerializerImports(importlib.abc.MetaPathFinder):
    """A finder that refuses :data:`SKIPPED` packages not yet imported to Ray's serializer registration."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> None:
        top = name.partition(".")[0]
        if top in SKIPPED and top not in sys.modules and _asked_by_registration():
            raise ModuleNotFoundError(f"No module named {name!r} (skipped for Ray's serializers)", name=name)
        return None


def _asked_by_registration() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.endswith(REGISTRATION):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def install() -> SkipRaySerializerImports:
    """Put the finder first on ``sys.meta_path`` (once) and return it."""
    for finder in sys.meta_path:
        if isinstance(finder, SkipRaySerializerImports):
            return finder
    finder = SkipRaySerializerImports()
    sys.meta_path.insert(0, finder)
    return finder


def ray_default_worker() -> str:
    """The path of Ray's ``default_worker.py`` (found without importing Ray)."""
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mlpsweep: Ray is not installed where this worker runs")
    return os.path.join(list(spec.submodule_search_locations)[0], "_private", "workers", "default_worker.py")


if __name__ == "__main__":
    install()
    sys.argv[0] = ray_default_worker()
    sys.path[0] = os.path.dirname(sys.argv[0])  # as if Ray's file had been run
    runpy.run_path(sys.argv[0], run_name="__main__")
