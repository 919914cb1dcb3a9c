"""Suite-wide pytest hooks: running under pytest-xdist (`make unit` runs `-n 2`).

What stays private to each xdist worker without help here: `tmp_path` (xdist gives every worker
its own base temp directory), ports (every test binds port 0) and Hypothesis' example database
(one directory, `.hypothesis/examples`, shared on purpose so that a failure found by one worker is
replayed by whichever worker runs that test next: its keys are per pytest node id, so two workers
never write the same key, and Hypothesis writes each entry through a temporary file and a rename).

What needs help: `python -X dev` (the unit target) is an interpreter option, and xdist starts its
workers as `sys.executable -c ...` without it, so the tests would silently lose dev mode (asyncio
debug, ResourceWarning and the other default-ignored warnings). The hooks below start each worker
with the controller's `-X dev` and make a worker refuse to run when that did not take effect.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import pytest

_DEV_MODE = "moqsrt_dev_mode"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """Start local workers with this interpreter and `-X dev` when the controller runs in dev
    mode (an explicit `--tx ...//python=` is left as given)."""
    if not sys.flags.dev_mode:
        return
    for spec in specs:
        if spec.popen and not spec.python:
            spec.python = shlex.join([sys.executable, "-X", "dev"])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each worker whether the controller runs in dev mode (checked in the worker)."""
    node.workerinput[_DEV_MODE] = sys.flags.dev_mode


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker: refuse to run without dev mode when the controller had it."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get(_DEV_MODE) and not sys.flags.dev_mode:
        raise pytest.UsageError("the xdist worker lost `python -X dev` (see tests/conftest.py)")
