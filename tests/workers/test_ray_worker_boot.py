"""Ray's serializer registration without pyarrow, pydantic and starlette (:mod:`workers.ray_worker_boot`),
each case in a fresh interpreter (the finder is process-wide, and these packages may be imported here)."""
from __future__ import annotations

from conftest import fresh_python as run


def test_ray_s_registration_finds_the_optional_packages_missing_and_everyone_else_finds_them():
    out = run("""
        import sys
        from workers.ray_worker_boot import install
        install(); install()
        assert sum(type(f).__name__ == "SkipRaySerializerImports" for f in sys.meta_path) == 1
        as_ray = compile("import pyarrow", "/site-packages/ray/util/serialization_addons.py", "exec")
        try:
            exec(as_ray, {})
        except ModuleNotFoundError as exc:
            print("refused", exc.name)
        import pyarrow
        print("imported", pyarrow.__name__, "pyarrow" in sys.modules)
        exec(as_ray, {})  # imported already: Ray registers its serializers as usual
        print("registration sees it")
    """)
    assert out.splitlines() == ["refused pyarrow", "imported pyarrow True", "registration sees it"]


def test_a_serialization_context_made_with_the_finder_imports_none_of_them():
    out = run("""
        import sys
        from workers.ray_worker_boot import SKIPPED, install
        install()
        from ray.util import serialization_addons
        class Context:
            def _register_cloudpickle_serializer(self, *args, **kwargs):
                raise AssertionError("registered a serializer for a skipped package")
            def _register_cloudpickle_reducer(self, *args, **kwargs):
                raise AssertionError("registered a reducer for a skipped package")
        serialization_addons.apply(Context())
        print(sorted(m for m in SKIPPED if m in sys.modules))
    """)
    assert out == "[]"


def test_ray_s_default_worker_is_found_without_importing_ray():
    out = run("""
        import sys
        from workers.ray_worker_boot import ray_default_worker
        path = ray_default_worker()
        print(path.endswith("ray/_private/workers/default_worker.py"), "ray" in sys.modules)
        import os; print(os.path.isfile(path))
    """)
    assert out.splitlines() == ["True False", "True"]
