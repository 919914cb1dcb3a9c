"""`fixtures/make_fixtures.py` (`make fixtures`) regenerates the committed fixtures exactly."""

from __future__ import annotations

import functools
import importlib.util
import sys
from types import ModuleType

import pytest

from tests.unit.mux.support import FIXTURES


@functools.cache
def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["ac3.ts", "aac_only.ts", "opus.ts", "h264_only.ts"])
def test_regenerating_a_fixture_reproduces_the_committed_bytes(name: str) -> None:
    builders = load_script().fixtures()
    assert builders[name]() == (FIXTURES / name).read_bytes()


def test_the_script_knows_every_committed_fixture() -> None:
    assert set(load_script().fixtures()) == {p.name for p in FIXTURES.glob("*.ts")}
