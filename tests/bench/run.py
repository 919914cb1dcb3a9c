"""Run every benchmark module under tests/bench (`make bench`).

Each `bench_*.py` exposes `main() -> None` that prints its own numbers and ratios against a peer
measured in the same run. Pass module names (without `.py`) to run a subset.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    """Run the selected (default: all) benchmarks in name order; return an exit status."""
    sys.path.insert(0, str(HERE.parent.parent))
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in names:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve string annotations through it
        spec.loader.exec_module(module)
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module.main()
        print(f"== {name} done in {time.perf_counter() - started:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
