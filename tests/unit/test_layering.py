"""The layers import downward only: model/ stands alone, mux/ knows no sockets or threads."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names)
MUX_FORBIDDEN = {"socket", "asyncio", "threading", "ctypes", "gateway", "selectors", "subprocess"}
MUX_ALLOWED_THIRD_PARTY = {"numpy", "construct", "model", "mux"}


def imported_roots(package: str) -> dict[str, set[str]]:
    """Map each module file of `package` to the top-level names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        roots: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = roots
    return found


def test_model_imports_only_the_standard_library_and_itself() -> None:
    for module, roots in imported_roots("model").items():
        bad = {r for r in roots if r not in STDLIB and r != "model"}
        assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("forbidden", sorted(MUX_FORBIDDEN))
def test_mux_imports_no_sockets_threads_or_gateway(forbidden: str) -> None:
    for module, roots in imported_roots("mux").items():
        assert forbidden not in roots, f"{module} imports {forbidden}"


def test_mux_third_party_imports_are_the_chosen_ones() -> None:
    for module, roots in imported_roots("mux").items():
        bad = {r for r in roots if r not in STDLIB and r not in MUX_ALLOWED_THIRD_PARTY}
        assert not bad, f"{module} imports {bad}"
