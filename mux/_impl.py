"""The one place that picks the implementation of the TS packet path: compiled (`mux._fast`,
built from `mux/_fast.pyx` by `pip install`) or the pure-Python modules it mirrors
(`mux.es_packets`, `mux.ts_mux`).

The compiled one is used when it was built, unless the environment has `MOQSRT_PURE_PYTHON=1`
when `mux` is first imported. Callers look the functions up here at each call (`_impl.plain_run`),
so `use()` switches every importer and writer at once (the tests run both). `NAME` says which
is in use ("compiled" or "pure-python").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType

from mux import es_packets

_fast: ModuleType | None
try:
    from mux import _fast
except ImportError:  # not built: the pure-Python path
    _fast = None

#: The implementation in use: "compiled" or "pure-python".
NAME = "pure-python"
plain_run = es_packets.plain_run
classify_small = es_packets.classify_small
#: `mux._fast.write_pes`, or None: `PidWriter.write_pes` then writes in Python.
write_pes: Callable[..., tuple[int, int]] | None = None
#: Most packets a batch may hold to be classified packet by packet (`classify_small`) rather
#: than vectorized with numpy (`classify_rows`), and the same while the stream was mostly runs
#: of continuation packets (see `mux.ts_import`).
small_batch = 256
runny_batch = 2048


def compiled_available() -> bool:
    """Whether the compiled module was built (and imports)."""
    return _fast is not None


def use(*, compiled: bool) -> None:
    """Switch to the compiled implementation (`ImportError` if it was not built) or to the
    pure-Python one, for every caller from the next call on."""
    global NAME, plain_run, classify_small, write_pes, small_batch, runny_batch
    if compiled:
        if _fast is None:
            raise ImportError("mux._fast is not built (pip install -e . builds it)")
        NAME = "compiled"
        plain_run = _fast.plain_run
        classify_small = _fast.classify_small
        write_pes = _fast.write_pes
    else:
        NAME = "pure-python"
        plain_run = es_packets.plain_run
        classify_small = es_packets.classify_small
        write_pes = None
    small_batch = 256
    runny_batch = 2048


use(compiled=_fast is not None and os.environ.get("MOQSRT_PURE_PYTHON") != "1")
