"""The one place that picks the implementation of the TS packet path: compiled (`mux._fast`,
built from `mux/_fast.pyx` by `pip install`) or the pure-Python modules it mirrors
(`mux.es_packets`, `mux.ts_mux`, `mux.ts_chunks`).

The compiled one is used when it was built, unless the environment has `MOQSRT_PURE_PYTHON=1`
when `mux` is first imported. Callers look the functions up here at each call (`_impl.plain_run`),
so `use()` switches every importer and exporter at once (the tests run both). `NAME` says
which is in use ("compiled" or "pure-python").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mux import es_packets

_fast: ModuleType | None
try:
    from mux import _fast
except ImportError:  # not built: the pure-Python path
    _fast = None

#: The implementation in use: "compiled" or "pure-python".
NAME = "pure-python"
plain_run = es_packets.plain_run
#: `mux.es_packets.classify_small` (bytes only) or its compiled twin (any buffer).
classify_small: Callable[..., tuple[int, int, int, bytes | None]] = es_packets.classify_small
#: The compiled-only shortcuts, None on the pure-Python path (the callers then do the same in
#: Python): `continue_run` (the usual live read in one call), `write_pes` (for
#: `PidWriter.write_pes`), `cut_payloads` and `cut_chunks` (for `mux.ts_chunks`).
continue_run: Callable[..., bool] | None = None
write_pes: Callable[..., tuple[int, int]] | None = None
cut_payloads: Callable[..., list[bytes]] | None = None
cut_chunks: Callable[..., list[Any]] | None = None
#: Whether `classify_small` takes batches of any size and any buffer (compiled: it beats the
#: vectorized numpy path, `es_packets.classify_rows`, at every size).
classify_any_batch = False


def compiled_available() -> bool:
    """Whether the compiled module was built (and imports)."""
    return _fast is not None


def use(*, compiled: bool) -> None:
    """Switch to the compiled implementation (`ImportError` if it was not built) or to the
    pure-Python one, for every caller from its next call on."""
    global NAME, plain_run, classify_small, continue_run, write_pes, cut_payloads, cut_chunks
    global classify_any_batch
    if compiled:
        if _fast is None:
            raise ImportError("mux._fast is not built (pip install -e . builds it)")
        NAME = "compiled"
        plain_run = _fast.plain_run
        classify_small = _fast.classify_small
        continue_run = _fast.continue_run
        write_pes = _fast.write_pes
        cut_payloads = _fast.cut_payloads
        cut_chunks = _fast.cut_chunks
        classify_any_batch = True
    else:
        NAME = "pure-python"
        plain_run = es_packets.plain_run
        classify_small = es_packets.classify_small
        continue_run = write_pes = cut_payloads = cut_chunks = None
        classify_any_batch = False


use(compiled=_fast is not None and os.environ.get("MOQSRT_PURE_PYTHON") != "1")
