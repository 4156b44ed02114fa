"""The throughput benchmark names functions by "module:name" to replay them; each must exist, so
that moving a function does not silently break the benchmark's ceiling."""

import importlib
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "throughput.py"


def view_stages():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VIEW_STAGES


@pytest.mark.parametrize(
    "name", sorted({n for names in view_stages().values() for n in names if ":" in n})
)
def test_module_stage_exists(name):
    module, attr = name.split(":")
    assert callable(getattr(importlib.import_module(module), attr))
