# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The compiled TS packet path: the same functions, with the same results, as the pure-Python
`mux.es_packets.plain_run` / `classify_small` and `mux.ts_mux.PidWriter.write_pes`.

Bytes in, plain Python objects out: `mux._impl` picks this module or the pure one, and the
tests run both on the same input (tests/unit/mux/test_fast_parity.py). State stays in the
callers' objects (`PesStream` continuity fields, `Collected` lists, the writer's counter).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy, memset

from mux.pes_assembly import Collected, PesEvent

cdef enum:
    PACKET = 188
    PAYLOAD = 184

cdef object _tuple_new = tuple.__new__


cdef bytes _run_payloads(const unsigned char* src, Py_ssize_t count):
    """The payloads of `count` packets at `src` (none with an adaptation field), joined."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, count * PAYLOAD)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    for k in range(count):
        memcpy(dst + k * PAYLOAD, src + k * PACKET + 4, PAYLOAD)
    return out


cdef inline Py_ssize_t _run_length(
    const unsigned char* p, Py_ssize_t at, Py_ssize_t left, int b1, int b2, int b3
):
    """How many packets from `p[at:]` (`left` of them, the first two known to be a run) share
    bytes 1-2 (`b1`, `b2`) and count their CC up from `b3`, plain (payload, no adaptation)."""
    cdef Py_ssize_t count = 2
    cdef const unsigned char* h = p + at + 2 * PACKET
    while count < left:
        if h[0] != 0x47 or h[1] != b1 or h[2] != b2 or h[3] != (0x10 | ((b3 + count) & 0x0F)):
            break
        count += 1
        h += PACKET
    return count


cdef inline int _af_fixed(int flags):
    return 1 + (6 if flags & 0x10 else 0) + (6 if flags & 0x08 else 0) + ((flags >> 2) & 1)


cdef inline bint _af_stuffed(const unsigned char* packet, int af_len):
    """`mux.es_packets.af_stuffed` for the packet at `packet`."""
    cdef int flags, used
    if af_len == 0:
        return True
    flags = packet[5]
    if flags == 0:
        return True
    used = _af_fixed(flags)
    if flags & 0x02:
        if used >= af_len:
            return False
        used += 1 + packet[5 + used]
    if flags & 0x01:
        if used >= af_len:
            return False
        used += 1 + packet[5 + used]
    return af_len > used


def plain_run(bytes raw, dict streams, pmt_pid):
    """`mux.es_packets.plain_run`, for any number of whole packets (no `LOOKAHEAD` bound)."""
    cdef const unsigned char* p = <const unsigned char*> PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw) // PACKET
    cdef int b1, b2, b3, pid, prev
    if n == 0:
        return None
    b1 = p[1]
    b2 = p[2]
    b3 = p[3]
    if b1 & 0xC0 or (b3 & 0xF0) != 0x10:
        return None
    pid = ((b1 & 0x1F) << 8) | b2
    st = streams.get(pid)
    if st is None or (pmt_pid is not None and pid == pmt_pid):
        return None
    prev = st.last_cc
    if prev < 0 or ((b3 - prev) & 0x0F) != 1 or st.pending_tei or not st.active:
        return None
    if n > 1:
        if p[PACKET] != 0x47 or p[PACKET + 1] != b1 or p[PACKET + 2] != b2:
            return None
        if p[PACKET + 3] != (0x10 | ((b3 + 1) & 0x0F)):
            return None
        if _run_length(p, 0, n, b1, b2, b3) != n:
            return None
    st.last_cc = (b3 + n - 1) & 0x0F
    return st, _run_payloads(p, n)


def continue_run(bytes raw, dict streams, pmt_pid, stats):
    """The usual live read in one call: if `plain_run(raw, ...)` applies and appending its
    payload to the open PES needs no decision (`PesAssembler.continue_pes` would only append:
    the PES length is known to be read, it does not complete or outgrow the PES, and the last
    packet before was not stuffed), do that, count the packets in `stats.packets` and return
    True; otherwise return False, having changed nothing."""
    cdef const unsigned char* p = <const unsigned char*> PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw) // PACKET
    cdef int b1, b2, b3, pid, prev
    cdef Py_ssize_t size, added
    if n == 0:
        return False
    b1 = p[1]
    b2 = p[2]
    b3 = p[3]
    if b1 & 0xC0 or (b3 & 0xF0) != 0x10:
        return False
    pid = ((b1 & 0x1F) << 8) | b2
    st = streams.get(pid)
    if st is None or (pmt_pid is not None and pid == pmt_pid):
        return False
    prev = st.last_cc
    if prev < 0 or ((b3 - prev) & 0x0F) != 1 or st.pending_tei or not st.active:
        return False
    if not st.checked or st.tail_stuffed:
        return False
    added = n * PAYLOAD
    size = st.size + added
    total = st.total
    if (total is not None and size >= total) or size > st.limit:
        return False
    if n > 1:
        if p[PACKET] != 0x47 or p[PACKET + 1] != b1 or p[PACKET + 2] != b2:
            return False
        if p[PACKET + 3] != (0x10 | ((b3 + 1) & 0x0F)):
            return False
        if _run_length(p, 0, n, b1, b2, b3) != n:
            return False
    st.last_cc = (b3 + n - 1) & 0x0F
    st.pieces.append(_run_payloads(p, n))
    st.size = size
    stats.packets += n
    return True


def classify_small(
    const unsigned char[::1] raw,
    Py_ssize_t i,
    dict streams,
    pmt_pid,
    dict collected,
    stats,
    headers,
):
    """`mux.es_packets.classify_small`, for any number of packets; `raw` may be any buffer
    (everything kept is copied out of it). The `headers` cache is not needed (returned as is)."""
    cdef Py_ssize_t size = raw.shape[0]
    cdef const unsigned char* p = &raw[0] if size else NULL
    cdef Py_ssize_t n = size // PACKET
    cdef int pmt = -1 if pmt_pid is None else pmt_pid
    cdef Py_ssize_t in_runs = 0, handled = 0, at, nxt, count, pos
    cdef int b1, b2, b3, pid, prev, cc, af_len, begin, damaged
    cdef bint disc, stuffed, gap, pusi
    cdef int cached_pid = -1
    cached = None
    while i < n:
        at = i * PACKET
        b1 = p[at + 1]
        b2 = p[at + 2]
        pid = ((b1 & 0x1F) << 8) | b2
        if pid == 0 or pid == pmt:
            break
        if pid != cached_pid:
            cached = streams.get(pid)
            cached_pid = pid
        st = cached
        if st is None:
            i += 1
            continue
        b3 = p[at + 3]
        prev = st.last_cc
        nxt = at + PACKET
        if (
            not b1 & 0xC0
            and (b3 & 0xF0) == 0x10
            and prev >= 0
            and ((b3 - prev) & 0x0F) == 1
            and nxt < size
            and p[nxt + 1] == b1
            and p[nxt + 2] == b2
            and p[nxt + 3] == (0x10 | ((b3 + 1) & 0x0F))
            and not st.pending_tei
        ):
            count = _run_length(p, at, n - i, b1, b2, b3)
            st.last_cc = (b3 + count - 1) & 0x0F
            in_runs += count
            col = collected.get(st)
            if col is None:
                col = collected[st] = Collected()
            col.starts.append(len(col.rows))
            col.pieces.append(_run_payloads(p + at, count))
            col.rows.extend(range(i, i + count))
            handled += count
            i += count
            continue
        handled += 1
        i += 1
        if b1 & 0x80:
            stats.transport_errors += 1
            st.pending_tei += 1
            continue
        if not b3 & 0x10:
            continue
        cc = b3 & 0x0F
        st.last_cc = cc
        damaged = st.pending_tei
        if cc == prev and not damaged:
            stats.duplicate_packets += 1
            continue
        if damaged:
            st.pending_tei = 0
        begin = 4
        disc = False
        stuffed = False
        if b3 & 0x20:
            af_len = p[at + 4]
            begin = 5 + af_len
            disc = af_len > 0 and (p[at + 5] & 0x80) != 0
            stuffed = st.video and not st.early_off and _af_stuffed(p + at, af_len)
        gap = damaged > 0 or (prev >= 0 and cc != ((prev + 1) & 0x0F) and not disc)
        pusi = (b1 & 0x40) != 0
        col = collected.get(st)
        if col is None:
            col = collected[st] = Collected()
        rows = col.rows
        pos = len(rows)
        if stuffed:
            col.stuffed.append(pos)
        if pusi or gap:
            col.events.append(
                _tuple_new(PesEvent, (pos, i - 1, pusi, gap, damaged, (prev + 1) & 0x0F, cc))
            )
        if begin < PACKET:
            col.starts.append(pos)
            col.pieces.append(
                PyBytes_FromStringAndSize(<const char*> p + at + begin, PACKET - begin)
            )
        rows.append(i - 1)
    return i, handled, in_runs, headers


cdef const unsigned char[::1] _bytes_view(data) except *:
    """`data` (bytes, bytearray, memoryview, ...) as contiguous bytes, as
    `memoryview(data).cast("B")` reads it (a view of another item format too)."""
    cdef const unsigned char[::1] view
    try:
        view = data
    except (ValueError, TypeError):
        view = memoryview(data).cast("B")
    return view


cdef inline Py_ssize_t _stuffing(unsigned char* d, int total, int flags):
    """Write an adaptation field of exactly `total` (>= 1) bytes at `d`; return `total`."""
    if total == 1:
        d[0] = 0
        return 1
    d[0] = total - 1
    d[1] = flags
    memset(d + 2, 0xFF, total - 2)
    return total


def write_pes(
    bytearray out,
    int pid,
    int cc,
    bytes prefix,
    body,
    bint random_access,
):
    """`mux.ts_mux.PidWriter.write_pes` for the writer of `pid` whose last counter was `cc`:
    append the packets to `out`; return (packets written, the last counter)."""
    cdef const unsigned char[::1] view = _bytes_view(body)
    cdef Py_ssize_t body_len = view.shape[0]
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(prefix)
    cdef Py_ssize_t total = plen + body_len
    cdef int b1 = (pid >> 8) & 0x1F
    cdef int b1s = 0x40 | b1
    cdef int b2 = pid & 0xFF
    cdef int af_flags = 0x40 if random_access else 0
    cdef Py_ssize_t cap_first = PAYLOAD - (2 if random_access else 0)
    cdef Py_ssize_t take, rest, full, tail, count, old, k, stuff
    cdef const unsigned char* src = &view[0] if body_len else NULL
    cdef const char* pre = PyBytes_AS_STRING(prefix)
    cdef unsigned char* d
    cc = (cc + 1) & 0x0F
    old = PyByteArray_GET_SIZE(out)
    if total <= PAYLOAD and not (random_access and total > cap_first):
        PyByteArray_Resize(out, old + PACKET)
        d = <unsigned char*> PyByteArray_AS_STRING(out) + old
        stuff = PAYLOAD - total
        d[0] = 0x47
        d[1] = b1s
        d[2] = b2
        d[3] = (0x10 if stuff == 0 else 0x30) | cc
        d += 4
        if stuff:
            d += _stuffing(d, <int> stuff, af_flags)
        memcpy(d, pre, plen)
        if body_len:
            memcpy(d + plen, src, body_len)
        return 1, cc
    if plen > cap_first:
        raise ValueError(f"PES prefix too long for one packet: {plen} bytes")
    take = cap_first - plen
    rest = body_len - take
    full = rest // PAYLOAD
    tail = rest - full * PAYLOAD
    count = 1 + full + (1 if tail else 0)
    PyByteArray_Resize(out, old + count * PACKET)
    d = <unsigned char*> PyByteArray_AS_STRING(out) + old
    d[0] = 0x47
    d[1] = b1s
    d[2] = b2
    if random_access:
        d[3] = 0x30 | cc
        d[4] = 1
        d[5] = 0x40
        d += 6
    else:
        d[3] = 0x10 | cc
        d += 4
    memcpy(d, pre, plen)
    memcpy(d + plen, src, take)
    d += plen + take
    src += take
    for k in range(full):
        cc = (cc + 1) & 0x0F
        d[0] = 0x47
        d[1] = b1
        d[2] = b2
        d[3] = 0x10 | cc
        memcpy(d + 4, src, PAYLOAD)
        d += PACKET
        src += PAYLOAD
    if tail:
        cc = (cc + 1) & 0x0F
        d[0] = 0x47
        d[1] = b1
        d[2] = b2
        d[3] = 0x30 | cc
        d += 4
        d += _stuffing(d, <int> (PAYLOAD - tail), 0)
        memcpy(d, src, tail)
    return count, cc


cdef enum:
    CHUNK = 7 * PACKET


def cut_payloads(data, Py_ssize_t start=0):
    """`mux.ts_chunks.cut_payloads`: `data[start:]` as 1316-byte payloads (bytes), the last
    shorter."""
    cdef const unsigned char[::1] view = _bytes_view(data)
    cdef Py_ssize_t size = view.shape[0]
    cdef Py_ssize_t at
    cdef list out = []
    if start < 0:
        start = max(0, size + start)
    at = start
    while at + CHUNK <= size:
        out.append(PyBytes_FromStringAndSize(<const char*> &view[at], CHUNK))
        at += CHUNK
    if at < size:
        out.append(PyBytes_FromStringAndSize(<const char*> &view[at], size - at))
    return out


def cut_chunks(list frames, chunk_type):
    """`mux.ts_chunks.cut_chunks`, making each `chunk_type` (a named tuple of (data, ts))."""
    cdef list out = []
    cdef Py_ssize_t at, size, step
    cdef const unsigned char[::1] view
    for frame in frames:
        data, ts = frame
        view = _bytes_view(data)
        size = view.shape[0]
        at = 0
        while at < size:
            step = CHUNK if size - at >= CHUNK else size - at
            out.append(
                _tuple_new(
                    chunk_type, (PyBytes_FromStringAndSize(<const char*> &view[at], step), ts)
                )
            )
            at += step
    return out
