"""A short sample of `benchmarks/fuzz_inputs.py` (issue 16): generated inputs to every parser and to the HTTP
endpoints give a parse, a clear error or a 4xx; never a traceback, a 500 or a hang. The full run (10,000
inputs per surface) and its figures are in docs/RELIABILITY.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from test_serving import trained_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
N = 30

_spec = importlib.util.spec_from_file_location(
    "fuzz_inputs", Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_inputs.py"
)
assert _spec is not None and _spec.loader is not None
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_inputs"] = fuzz
_spec.loader.exec_module(fuzz)


@pytest.mark.parametrize("surface", sorted(fuzz.SURFACES))
def test_parser_surface(surface: str, tmp_path: Path) -> None:
    tally = fuzz.SURFACES[surface](tmp_path, N, 10.0)
    assert tally.inputs == N
    assert tally.failures == 0, "\n".join(tally.examples)


def test_model_dir_and_http(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    model = trained_tiny_model(tmp_path_factory)
    files = fuzz.surface_model_dir(model, tmp_path, N, 10.0)
    http = fuzz.surface_http(model, N, 10.0)
    for tally in (files, http):
        assert tally.inputs == N
        assert tally.failures == 0, "\n".join(tally.examples)
