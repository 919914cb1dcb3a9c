"""gateway.threadname: the kernel sees the names the gateway gives its threads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from gateway.threadname import name_this_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_a_named_thread_shows_its_name_in_proc_and_long_names_are_cut_to_15_bytes() -> None:
    seen: dict[str, str] = {}

    def run(name: str) -> None:
        before = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
        name_this_thread(name)
        after = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
        seen[name] = f"{before}->{after}"

    for name in ("moqsrt-ledger", "a-name-much-longer-than-fifteen"):
        thread = threading.Thread(target=run, args=(name,))
        thread.start()
        thread.join(5)
    assert seen["moqsrt-ledger"].endswith("->moqsrt-ledger")
    assert not seen["moqsrt-ledger"].startswith("moqsrt-ledger")
    assert seen["a-name-much-longer-than-fifteen"].endswith("->a-name-much-lon")
    # The caller's own thread keeps its name.
    main = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
    assert main not in ("moqsrt-ledger", "a-name-much-lon")
