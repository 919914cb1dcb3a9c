"""C prototypes, constants and structs of libsrt 1.5 (`/usr/include/srt/srt.h`), nothing else.

`load()` opens the system library once (Debian `libsrt1.5-openssl`, then the GnuTLS flavour)
and gives every function it uses `argtypes` and `restype`. Each libsrt call has one typed
wrapper below, named after it without the `srt_` prefix where that reads better; the raw
`CDLL` attributes never leave this module. One exception to the typing: the hot send and
receive paths (`sendmsg2_many`, `recvmsg_drain`) call their own untyped pointers to
`srt_sendmsg2` and `srt_recvmsg`, see there. Errors are not interpreted here: callers pass
the return code to `gateway.srt.errors.check`, which reads libsrt's thread-local last error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import threading
from collections.abc import Iterable
from enum import IntEnum
from typing import Any, Final

DEBIAN_PACKAGE: Final = "libsrt1.5-openssl"
#: SONAMEs tried in order: the OpenSSL build, the GnuTLS build (ffmpeg pulls it in), then
#: whatever `ctypes.util.find_library("srt")` names.
CANDIDATES: Final = ("libsrt.so.1.5", "libsrt-gnutls.so.1.5")
#: 1.5.1 is the first release with the 1.5.0 statistics layout and reject-reason API we rely on.
MIN_VERSION: Final = 0x010501

SRT_ERROR: Final = -1
SRT_INVALID_SOCK: Final = -1
#: Longest SRTO_STREAMID libsrt accepts (srt.h `MAX_SID_LENGTH`), in characters.
MAX_STREAM_ID_CHARS: Final = 512


class SockOpt(IntEnum):
    """`SRT_SOCKOPT` values used by the binding (srt.h 1.5.1)."""

    SRTO_MSS = 0
    SRTO_SNDSYN = 1
    SRTO_RCVSYN = 2
    SRTO_FC = 4
    SRTO_SNDBUF = 5
    SRTO_RCVBUF = 6
    SRTO_LINGER = 7
    SRTO_UDP_SNDBUF = 8
    SRTO_UDP_RCVBUF = 9
    SRTO_REUSEADDR = 15
    SRTO_MAXBW = 16
    SRTO_STATE = 17
    SRTO_SNDDATA = 19
    SRTO_RCVDATA = 20
    SRTO_LATENCY = 23
    SRTO_INPUTBW = 24
    SRTO_OHEADBW = 25
    SRTO_PASSPHRASE = 26
    SRTO_PBKEYLEN = 27
    SRTO_KMSTATE = 28
    SRTO_TLPKTDROP = 31
    SRTO_PEERVERSION = 35
    SRTO_CONNTIMEO = 36
    SRTO_RCVLATENCY = 43
    SRTO_PEERLATENCY = 44
    SRTO_STREAMID = 46
    SRTO_PAYLOADSIZE = 49
    SRTO_TRANSTYPE = 50
    SRTO_ENFORCEDENCRYPTION = 53
    SRTO_PEERIDLETIMEO = 55


class SockStatus(IntEnum):
    """`SRT_SOCKSTATUS`, what `srt_getsockstate` returns."""

    SRTS_INIT = 1
    SRTS_OPENED = 2
    SRTS_LISTENING = 3
    SRTS_CONNECTING = 4
    SRTS_CONNECTED = 5
    SRTS_BROKEN = 6
    SRTS_CLOSING = 7
    SRTS_CLOSED = 8
    SRTS_NONEXIST = 9


class SrtErrno(IntEnum):
    """`SRT_ERRNO` (1000 x major + minor) as `srt_getlasterror` returns it."""

    SRT_EUNKNOWN = -1
    SRT_SUCCESS = 0
    SRT_ECONNSETUP = 1000
    SRT_ENOSERVER = 1001
    SRT_ECONNREJ = 1002
    SRT_ESOCKFAIL = 1003
    SRT_ESECFAIL = 1004
    SRT_ESCLOSED = 1005
    SRT_ECONNFAIL = 2000
    SRT_ECONNLOST = 2001
    SRT_ENOCONN = 2002
    SRT_ERESOURCE = 3000
    SRT_ETHREAD = 3001
    SRT_ENOBUF = 3002
    SRT_ESYSOBJ = 3003
    SRT_EINVOP = 5000
    SRT_EBOUNDSOCK = 5001
    SRT_ECONNSOCK = 5002
    SRT_EINVPARAM = 5003
    SRT_EINVSOCK = 5004
    SRT_EUNBOUNDSOCK = 5005
    SRT_ENOLISTEN = 5006
    SRT_ERDVNOSERV = 5007
    SRT_ERDVUNBOUND = 5008
    SRT_EINVALMSGAPI = 5009
    SRT_EINVALBUFFERAPI = 5010
    SRT_EDUPLISTEN = 5011
    SRT_ELARGEMSG = 5012
    SRT_EINVPOLLID = 5013
    SRT_EPOLLEMPTY = 5014
    SRT_EBINDCONFLICT = 5015
    SRT_EASYNCFAIL = 6000
    SRT_EASYNCSND = 6001
    SRT_EASYNCRCV = 6002
    SRT_ETIMEOUT = 6003
    SRT_ECONGEST = 6004
    SRT_EPEERERR = 7000


class RejectReason(IntEnum):
    """`SRT_REJECT_REASON`: libsrt's own reasons (below 1000); 1000+ are predefined/user codes."""

    SRT_REJ_UNKNOWN = 0
    SRT_REJ_SYSTEM = 1
    SRT_REJ_PEER = 2
    SRT_REJ_RESOURCE = 3
    SRT_REJ_ROGUE = 4
    SRT_REJ_BACKLOG = 5
    SRT_REJ_IPE = 6
    SRT_REJ_CLOSE = 7
    SRT_REJ_VERSION = 8
    SRT_REJ_RDVCOOKIE = 9
    SRT_REJ_BADSECRET = 10
    SRT_REJ_UNSECURE = 11
    SRT_REJ_MESSAGEAPI = 12
    SRT_REJ_CONGESTION = 13
    SRT_REJ_FILTER = 14
    SRT_REJ_GROUP = 15
    SRT_REJ_TIMEOUT = 16


class EpollOpt(IntEnum):
    """`SRT_EPOLL_OPT` event bits and `SRT_EPOLL_FLAGS` for `srt_epoll_set`."""

    SRT_EPOLL_IN = 0x1
    SRT_EPOLL_OUT = 0x4
    SRT_EPOLL_ERR = 0x8
    SRT_EPOLL_ENABLE_EMPTY = 1


class LogLevel(IntEnum):
    """syslog levels libsrt uses for `srt_setloglevel` and its log handler."""

    LOG_CRIT = 2
    LOG_ERR = 3
    LOG_WARNING = 4
    LOG_NOTICE = 5
    LOG_DEBUG = 7


#: `srt_setlogflags` bits: the handler gets the bare message (no time, thread, severity, EOL).
SRT_LOGF_ALL_DISABLED: Final = 1 | 2 | 4 | 8


class SrtTraceBStats(ctypes.Structure):
    """`SRT_TRACEBSTATS` (`struct CBytePerfMon`), every field in srt.h 1.5.1 order: 496 bytes.

    ctypes has no compiler to catch a missing field, so all of them are listed;
    `tests/unit/gateway/test_srt_lib.py` checks size and offsets against the library's output.
    """

    _fields_ = (
        # global measurements
        ("msTimeStamp", ctypes.c_int64),
        ("pktSentTotal", ctypes.c_int64),
        ("pktRecvTotal", ctypes.c_int64),
        ("pktSndLossTotal", ctypes.c_int),
        ("pktRcvLossTotal", ctypes.c_int),
        ("pktRetransTotal", ctypes.c_int),
        ("pktSentACKTotal", ctypes.c_int),
        ("pktRecvACKTotal", ctypes.c_int),
        ("pktSentNAKTotal", ctypes.c_int),
        ("pktRecvNAKTotal", ctypes.c_int),
        ("usSndDurationTotal", ctypes.c_int64),
        ("pktSndDropTotal", ctypes.c_int),
        ("pktRcvDropTotal", ctypes.c_int),
        ("pktRcvUndecryptTotal", ctypes.c_int),
        ("byteSentTotal", ctypes.c_uint64),
        ("byteRecvTotal", ctypes.c_uint64),
        ("byteRcvLossTotal", ctypes.c_uint64),
        ("byteRetransTotal", ctypes.c_uint64),
        ("byteSndDropTotal", ctypes.c_uint64),
        ("byteRcvDropTotal", ctypes.c_uint64),
        ("byteRcvUndecryptTotal", ctypes.c_uint64),
        # local measurements
        ("pktSent", ctypes.c_int64),
        ("pktRecv", ctypes.c_int64),
        ("pktSndLoss", ctypes.c_int),
        ("pktRcvLoss", ctypes.c_int),
        ("pktRetrans", ctypes.c_int),
        ("pktRcvRetrans", ctypes.c_int),
        ("pktSentACK", ctypes.c_int),
        ("pktRecvACK", ctypes.c_int),
        ("pktSentNAK", ctypes.c_int),
        ("pktRecvNAK", ctypes.c_int),
        ("mbpsSendRate", ctypes.c_double),
        ("mbpsRecvRate", ctypes.c_double),
        ("usSndDuration", ctypes.c_int64),
        ("pktReorderDistance", ctypes.c_int),
        ("pktRcvAvgBelatedTime", ctypes.c_double),
        ("pktRcvBelated", ctypes.c_int64),
        ("pktSndDrop", ctypes.c_int),
        ("pktRcvDrop", ctypes.c_int),
        ("pktRcvUndecrypt", ctypes.c_int),
        ("byteSent", ctypes.c_uint64),
        ("byteRecv", ctypes.c_uint64),
        ("byteRcvLoss", ctypes.c_uint64),
        ("byteRetrans", ctypes.c_uint64),
        ("byteSndDrop", ctypes.c_uint64),
        ("byteRcvDrop", ctypes.c_uint64),
        ("byteRcvUndecrypt", ctypes.c_uint64),
        # instant measurements
        ("usPktSndPeriod", ctypes.c_double),
        ("pktFlowWindow", ctypes.c_int),
        ("pktCongestionWindow", ctypes.c_int),
        ("pktFlightSize", ctypes.c_int),
        ("msRTT", ctypes.c_double),
        ("mbpsBandwidth", ctypes.c_double),
        ("byteAvailSndBuf", ctypes.c_int),
        ("byteAvailRcvBuf", ctypes.c_int),
        ("mbpsMaxBW", ctypes.c_double),
        ("byteMSS", ctypes.c_int),
        ("pktSndBuf", ctypes.c_int),
        ("byteSndBuf", ctypes.c_int),
        ("msSndBuf", ctypes.c_int),
        ("msSndTsbPdDelay", ctypes.c_int),
        ("pktRcvBuf", ctypes.c_int),
        ("byteRcvBuf", ctypes.c_int),
        ("msRcvBuf", ctypes.c_int),
        ("msRcvTsbPdDelay", ctypes.c_int),
        ("pktSndFilterExtraTotal", ctypes.c_int),
        ("pktRcvFilterExtraTotal", ctypes.c_int),
        ("pktRcvFilterSupplyTotal", ctypes.c_int),
        ("pktRcvFilterLossTotal", ctypes.c_int),
        ("pktSndFilterExtra", ctypes.c_int),
        ("pktRcvFilterExtra", ctypes.c_int),
        ("pktRcvFilterSupply", ctypes.c_int),
        ("pktRcvFilterLoss", ctypes.c_int),
        ("pktReorderTolerance", ctypes.c_int),
        # new in 1.5.0
        ("pktSentUniqueTotal", ctypes.c_int64),
        ("pktRecvUniqueTotal", ctypes.c_int64),
        ("byteSentUniqueTotal", ctypes.c_uint64),
        ("byteRecvUniqueTotal", ctypes.c_uint64),
        ("pktSentUnique", ctypes.c_int64),
        ("pktRecvUnique", ctypes.c_int64),
        ("byteSentUnique", ctypes.c_uint64),
        ("byteRecvUnique", ctypes.c_uint64),
    )


class SrtMsgCtrl(ctypes.Structure):
    """`SRT_MSGCTRL`: `{int flags, msgttl, inorder, boundary; int64 srctime; int32 pktseq,
    msgno; void* grpdata; size_t grpdata_size}`, 48 bytes on x86-64."""

    _fields_ = (
        ("flags", ctypes.c_int),
        ("msgttl", ctypes.c_int),
        ("inorder", ctypes.c_int),
        ("boundary", ctypes.c_int),
        ("srctime", ctypes.c_int64),
        ("pktseq", ctypes.c_int32),
        ("msgno", ctypes.c_int32),
        ("grpdata", ctypes.c_void_p),
        ("grpdata_size", ctypes.c_size_t),
    )


class SrtLinger(ctypes.Structure):
    """`struct linger` as SRTO_LINGER takes it: `{int l_onoff; int l_linger /* s */}`."""

    _fields_ = (("l_onoff", ctypes.c_int), ("l_linger", ctypes.c_int))


# typedef int srt_listen_callback_fn(void* opaq, SRTSOCKET ns, int hsversion,
#                                    const struct sockaddr* peeraddr, const char* streamid);
LISTEN_CALLBACK: Final = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)
# typedef void SRT_LOG_HANDLER_FN(void* opaque, int level, const char* file, int line,
#                                 const char* area, const char* message);
LOG_HANDLER: Final = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_char_p,
)

_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_size_t_p = ctypes.POINTER(ctypes.c_size_t)

# name: (restype, argtypes), each from its C signature in srt.h 1.5.1.
_PROTOTYPES: Final[dict[str, tuple[Any, tuple[Any, ...]]]] = {
    # int srt_startup(void); int srt_cleanup(void); uint32_t srt_getversion(void);
    "srt_startup": (ctypes.c_int, ()),
    "srt_cleanup": (ctypes.c_int, ()),
    "srt_getversion": (ctypes.c_uint32, ()),
    # SRTSOCKET srt_create_socket(void);
    "srt_create_socket": (ctypes.c_int32, ()),
    # int srt_bind(SRTSOCKET u, const struct sockaddr* name, int namelen);
    "srt_bind": (ctypes.c_int, (ctypes.c_int32, ctypes.c_void_p, ctypes.c_int)),
    # int srt_listen(SRTSOCKET u, int backlog);
    "srt_listen": (ctypes.c_int, (ctypes.c_int32, ctypes.c_int)),
    # SRTSOCKET srt_accept(SRTSOCKET u, struct sockaddr* addr, int* addrlen);
    "srt_accept": (ctypes.c_int32, (ctypes.c_int32, ctypes.c_void_p, _c_int_p)),
    # int srt_listen_callback(SRTSOCKET lsn, srt_listen_callback_fn* hook_fn, void* hook_opaque);
    "srt_listen_callback": (ctypes.c_int, (ctypes.c_int32, LISTEN_CALLBACK, ctypes.c_void_p)),
    # int srt_connect(SRTSOCKET u, const struct sockaddr* name, int namelen);
    "srt_connect": (ctypes.c_int, (ctypes.c_int32, ctypes.c_void_p, ctypes.c_int)),
    # int srt_close(SRTSOCKET u);
    "srt_close": (ctypes.c_int, (ctypes.c_int32,)),
    # int srt_getsockname(SRTSOCKET u, struct sockaddr* name, int* namelen);
    "srt_getsockname": (ctypes.c_int, (ctypes.c_int32, ctypes.c_void_p, _c_int_p)),
    # int srt_getsockflag(SRTSOCKET u, SRT_SOCKOPT opt, void* optval, int* optlen);
    "srt_getsockflag": (ctypes.c_int, (ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, _c_int_p)),
    # int srt_setsockflag(SRTSOCKET u, SRT_SOCKOPT opt, const void* optval, int optlen);
    "srt_setsockflag": (
        ctypes.c_int,
        (ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, ctypes.c_int),
    ),
    # int srt_sendmsg2(SRTSOCKET u, const char* buf, int len, SRT_MSGCTRL* mctrl);
    "srt_sendmsg2": (
        ctypes.c_int,
        (ctypes.c_int32, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(SrtMsgCtrl)),
    ),
    # int srt_recvmsg(SRTSOCKET u, char* buf, int len);
    "srt_recvmsg": (ctypes.c_int, (ctypes.c_int32, ctypes.c_void_p, ctypes.c_int)),
    # int64_t srt_time_now(void);
    "srt_time_now": (ctypes.c_int64, ()),
    # void srt_msgctrl_init(SRT_MSGCTRL* mctrl);
    "srt_msgctrl_init": (None, (ctypes.POINTER(SrtMsgCtrl),)),
    # const char* srt_getlasterror_str(void); int srt_getlasterror(int* errno_loc);
    "srt_getlasterror_str": (ctypes.c_char_p, ()),
    "srt_getlasterror": (ctypes.c_int, (_c_int_p,)),
    # void srt_clearlasterror(void);
    "srt_clearlasterror": (None, ()),
    # int srt_bstats(SRTSOCKET u, SRT_TRACEBSTATS* perf, int clear);
    "srt_bstats": (ctypes.c_int, (ctypes.c_int32, ctypes.POINTER(SrtTraceBStats), ctypes.c_int)),
    # SRT_SOCKSTATUS srt_getsockstate(SRTSOCKET u);
    "srt_getsockstate": (ctypes.c_int, (ctypes.c_int32,)),
    # int srt_epoll_create(void); int srt_epoll_release(int eid);
    "srt_epoll_create": (ctypes.c_int, ()),
    "srt_epoll_release": (ctypes.c_int, (ctypes.c_int,)),
    # int srt_epoll_add_usock / srt_epoll_update_usock(int eid, SRTSOCKET u, const int* events);
    "srt_epoll_add_usock": (ctypes.c_int, (ctypes.c_int, ctypes.c_int32, _c_int_p)),
    "srt_epoll_update_usock": (ctypes.c_int, (ctypes.c_int, ctypes.c_int32, _c_int_p)),
    # int srt_epoll_remove_usock(int eid, SRTSOCKET u);
    "srt_epoll_remove_usock": (ctypes.c_int, (ctypes.c_int, ctypes.c_int32)),
    # int srt_epoll_add_ssock(int eid, SYSSOCKET s, const int* events);
    "srt_epoll_add_ssock": (ctypes.c_int, (ctypes.c_int, ctypes.c_int, _c_int_p)),
    # int srt_epoll_remove_ssock(int eid, SYSSOCKET s);
    "srt_epoll_remove_ssock": (ctypes.c_int, (ctypes.c_int, ctypes.c_int)),
    # int srt_epoll_wait(int eid, SRTSOCKET* readfds, int* rnum, SRTSOCKET* writefds, int* wnum,
    #                    int64_t msTimeOut, SYSSOCKET* lrfds, int* lrnum, SYSSOCKET* lwfds,
    #                    int* lwnum);
    "srt_epoll_wait": (
        ctypes.c_int,
        (
            ctypes.c_int,
            ctypes.c_void_p,
            _c_int_p,
            ctypes.c_void_p,
            _c_int_p,
            ctypes.c_int64,
            ctypes.c_void_p,
            _c_int_p,
            ctypes.c_void_p,
            _c_int_p,
        ),
    ),
    # int32_t srt_epoll_set(int eid, int32_t flags);
    "srt_epoll_set": (ctypes.c_int32, (ctypes.c_int, ctypes.c_int32)),
    # void srt_setloglevel(int ll); void srt_setlogflags(int flags);
    "srt_setloglevel": (None, (ctypes.c_int,)),
    "srt_setlogflags": (None, (ctypes.c_int,)),
    # void srt_setloghandler(void* opaque, SRT_LOG_HANDLER_FN* handler);
    "srt_setloghandler": (None, (ctypes.c_void_p, LOG_HANDLER)),
    # int srt_getsndbuffer(SRTSOCKET sock, size_t* blocks, size_t* bytes);
    "srt_getsndbuffer": (ctypes.c_int, (ctypes.c_int32, _c_size_t_p, _c_size_t_p)),
    # int srt_getrejectreason(SRTSOCKET sock); int srt_setrejectreason(SRTSOCKET sock, int value);
    "srt_getrejectreason": (ctypes.c_int, (ctypes.c_int32,)),
    "srt_setrejectreason": (ctypes.c_int, (ctypes.c_int32, ctypes.c_int)),
    # const char* srt_rejectreason_str(int id);
    "srt_rejectreason_str": (ctypes.c_char_p, (ctypes.c_int,)),
}

_lock = threading.Lock()
_lib: Any = None
_path: str | None = None


def _open(names: tuple[str, ...]) -> tuple[Any, str]:
    """Open the first loadable of `names`, then find_library("srt"); OSError(ENOENT) if none."""
    tried: list[str] = []
    found = ctypes.util.find_library("srt")
    for name in (*names, *((found,) if found and found not in names else ())):
        tried.append(name)
        try:
            return ctypes.CDLL(name, use_errno=True), name
        except OSError:
            continue
    raise OSError(
        errno.ENOENT,
        f"libsrt 1.5 not found (tried {', '.join(tried)}); install the Debian package "
        f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE})",
    )


def _bind(cdll: Any, path: str) -> Any:
    """Give every prototype its types and check the version; OSError naming the package if not."""
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            func = getattr(cdll, name)
        except AttributeError as exc:
            raise OSError(
                errno.ENOSYS,
                f"{path} has no {name}; libsrt >= 1.5.1 is needed ({DEBIAN_PACKAGE})",
            ) from exc
        func.restype = restype
        func.argtypes = argtypes
    found = int(cdll.srt_getversion())
    if found < MIN_VERSION:
        raise OSError(
            errno.ENOSYS,
            f"{path} is libsrt {found >> 16}.{(found >> 8) & 0xFF}.{found & 0xFF}; "
            f"1.5.1 or newer is needed ({DEBIAN_PACKAGE})",
        )
    return cdll


def load(names: tuple[str, ...] = CANDIDATES) -> None:
    """Open and type libsrt once per process (later calls return at once).

    Raises OSError (errno ENOENT or ENOSYS) naming Debian package libsrt1.5-openssl when no
    candidate loads or the library is older than 1.5.1. Thread-safe.
    """
    global _lib, _path
    with _lock:
        if _lib is not None:
            return
        cdll, path = _open(names)
        _lib = _bind(cdll, path)
        _path = path


def loaded_path() -> str | None:
    """The name the library was opened under, or None before `load()`."""
    return _path


def _l() -> Any:
    if _lib is None:
        load()
    return _lib


# ---- library ---------------------------------------------------------------------------------


def version() -> int:
    """`srt_getversion()`: 0xMMmmpp, e.g. 0x010501 for 1.5.1."""
    return int(_l().srt_getversion())


def startup() -> int:
    """`srt_startup()`: 0 first time, 1 if already started (libsrt counts), -1 on error."""
    return int(_l().srt_startup())


def cleanup() -> int:
    """`srt_cleanup()`: drops libsrt's start count; at zero closes every socket and thread."""
    return int(_l().srt_cleanup())


# ---- errors ----------------------------------------------------------------------------------


def getlasterror() -> tuple[int, int]:
    """`srt_getlasterror(&errno)`: (SRT_ERRNO code, system errno) of this thread's last call."""
    sys_errno = ctypes.c_int(0)
    code = int(_l().srt_getlasterror(ctypes.byref(sys_errno)))
    return code, sys_errno.value


def getlasterror_str() -> str:
    """`srt_getlasterror_str()`: this thread's last error text (thread-safe, unlike strerror)."""
    raw: bytes | None = _l().srt_getlasterror_str()
    return raw.decode("utf-8", "replace") if raw else ""


def clearlasterror() -> None:
    """`srt_clearlasterror()` on this thread."""
    _l().srt_clearlasterror()


def rejectreason_str(code: int) -> str:
    """`srt_rejectreason_str(code)`: libsrt's text for a reject reason."""
    raw: bytes | None = _l().srt_rejectreason_str(code)
    return raw.decode("utf-8", "replace") if raw else ""


def getrejectreason(u: int) -> int:
    """`srt_getrejectreason(u)`: why a caller's connection was refused (0 = not rejected)."""
    return int(_l().srt_getrejectreason(u))


def setrejectreason(u: int, code: int) -> int:
    """`srt_setrejectreason(u, code)`: the reason a listen callback reports; code >= 1000."""
    return int(_l().srt_setrejectreason(u, code))


# ---- sockets ---------------------------------------------------------------------------------


def create_socket() -> int:
    """`srt_create_socket()`: a new socket id, or SRT_INVALID_SOCK (-1)."""
    return int(_l().srt_create_socket())


def bind(u: int, addr: bytes) -> int:
    """`srt_bind(u, addr, len)`: `addr` is a packed sockaddr_in / sockaddr_in6."""
    return int(_l().srt_bind(u, addr, len(addr)))


def listen(u: int, backlog: int) -> int:
    """`srt_listen(u, backlog)`. Takes the receive queue's listener lock: I/O thread only."""
    return int(_l().srt_listen(u, backlog))


def accept(u: int, addr_buf: ctypes.Array[ctypes.c_char]) -> int:
    """`srt_accept(u, addr, &len)`: new socket id or -1; the peer sockaddr lands in addr_buf."""
    addrlen = ctypes.c_int(len(addr_buf))
    return int(_l().srt_accept(u, addr_buf, ctypes.byref(addrlen)))


def listen_callback(u: int, fn: Any, opaque: int) -> int:
    """`srt_listen_callback(u, fn, opaque)`; `fn` (a LISTEN_CALLBACK) must outlive the socket."""
    return int(_l().srt_listen_callback(u, fn, ctypes.c_void_p(opaque)))


def connect(u: int, addr: bytes) -> int:
    """`srt_connect(u, addr, len)`: returns at once on a non-blocking (SRTO_RCVSYN=0) socket."""
    return int(_l().srt_connect(u, addr, len(addr)))


def close(u: int) -> int:
    """`srt_close(u)`. On a listener it waits for a running listen callback: I/O thread only."""
    return int(_l().srt_close(u))


def getsockname(u: int, addr_buf: ctypes.Array[ctypes.c_char]) -> int:
    """`srt_getsockname(u, addr, &len)`: the bound address lands in addr_buf."""
    addrlen = ctypes.c_int(len(addr_buf))
    return int(_l().srt_getsockname(u, addr_buf, ctypes.byref(addrlen)))


def getsockstate(u: int) -> int:
    """`srt_getsockstate(u)`: a SockStatus value (SRTS_NONEXIST once the id is gone)."""
    return int(_l().srt_getsockstate(u))


def setsockflag(u: int, opt: int, value: ctypes._CData) -> int:
    """`srt_setsockflag(u, opt, &value, sizeof value)` for any ctypes value or struct."""
    return int(_l().srt_setsockflag(u, opt, ctypes.byref(value), ctypes.sizeof(value)))


def setsockflag_bytes(u: int, opt: int, value: bytes) -> int:
    """`srt_setsockflag(u, opt, value, len)` for string options (passphrase, stream id)."""
    return int(_l().srt_setsockflag(u, opt, value, len(value)))


def getsockflag(u: int, opt: int, value: ctypes._CData) -> int:
    """`srt_getsockflag(u, opt, &value, &len)` into a ctypes value of the option's size."""
    optlen = ctypes.c_int(ctypes.sizeof(value))
    return int(_l().srt_getsockflag(u, opt, ctypes.byref(value), ctypes.byref(optlen)))


def getsockflag_bytes(u: int, opt: int, size: int = 513) -> tuple[int, bytes]:
    """`srt_getsockflag(u, opt, buf, &len)` for string options: (rc, value bytes)."""
    buf = ctypes.create_string_buffer(size)
    optlen = ctypes.c_int(size)
    rc = int(_l().srt_getsockflag(u, opt, buf, ctypes.byref(optlen)))
    return rc, buf.raw[: max(optlen.value, 0)] if rc >= 0 else b""


#: `ctypes.byref(mctrl)` of a `SrtMsgCtrl` (build it once with `msgctrl_ref`), or None (NULL).
MsgCtrlRef = object

# The hot send path's own function pointer (`cdll["srt_sendmsg2"]` is a fresh object, so the
# typed `srt_sendmsg2` keeps its argtypes). No argtypes: ctypes passes a Python int as C int and
# bytes as char* directly, a pre-built byref as the pointer, None as NULL, skipping the per-call
# `from_param` conversions (a third of the call's cost with argtypes; measured 2.7 -> 1.4 us).
_sendmsg2_fast: Any = None


def _bind_sendmsg2_fast() -> Any:
    global _sendmsg2_fast
    func = _l()["srt_sendmsg2"]
    func.restype = ctypes.c_int
    _sendmsg2_fast = func
    return func


def msgctrl_ref(mctrl: SrtMsgCtrl) -> MsgCtrlRef:
    """`&mctrl` for `sendmsg2_many`; keep `mctrl` referenced for as long as the result is used."""
    return ctypes.byref(mctrl)


def sendmsg2_many(u: int, payloads: Iterable[bytes], mctrl_ref: MsgCtrlRef | None) -> int:
    """`srt_sendmsg2(u, p, len(p), mctrl)` for each of `payloads` in order, stopping at the
    first -1: how many were queued. On a short count this thread's last error (read it next,
    with `getlasterror`) says why (SRT_EASYNCSND: send buffer full).

    Each payload must be `bytes` (ctypes passes its buffer as char*; anything else raises
    ctypes.ArgumentError); `u` a socket id. `mctrl_ref` is `msgctrl_ref(mctrl)` (one message
    control shared by all the payloads: its `srctime` applies to each) or None (NULL:
    libsrt's defaults, each payload stamped with its own send time).
    """
    send = _sendmsg2_fast
    if send is None:
        send = _bind_sendmsg2_fast()
    queued = 0
    for payload in payloads:
        if send(u, payload, len(payload), mctrl_ref) < 0:
            break
        queued += 1
    return queued


def time_now() -> int:
    """`srt_time_now()`: libsrt's steady clock in microseconds, the domain of `srctime`."""
    return int(_l().srt_time_now())


def recvmsg(u: int, buf: ctypes.Array[ctypes.c_char], size: int) -> int:
    """`srt_recvmsg(u, buf, size)`: one message's length, or -1 (SRT_EASYNCRCV when empty)."""
    return int(_l().srt_recvmsg(u, buf, size))


# The hot receive path's own untyped pointer to `srt_recvmsg` (same reasoning as
# `_sendmsg2_fast`: a Python int goes as C int, a pre-built byref as the buffer's address).
_recvmsg_fast: Any = None


def _bind_recvmsg_fast() -> Any:
    global _recvmsg_fast
    func = _l()["srt_recvmsg"]
    func.restype = ctypes.c_int
    _recvmsg_fast = func
    return func


def recvmsg_drain(
    u: int, buf: ctypes.Array[ctypes.c_char], size: int, max_msgs: int
) -> list[bytes]:
    """`srt_recvmsg(u, buf, size)` repeatedly until it returns <= 0 or `max_msgs` messages
    were read: the messages in order, each a fresh `bytes` copy (`buf` is reused).

    Fewer than `max_msgs` means the last call failed: this thread's last error (read it next,
    with `getlasterror`, on the same thread) says why (SRT_EASYNCRCV: nothing more for now).
    `max_msgs` of them means the socket may hold more. `size` (at most `len(buf)`, checked)
    bounds each message; `u` must be an int socket id.
    """
    if size > len(buf):
        raise ValueError(f"size {size} exceeds the buffer's {len(buf)} bytes")
    recv = _recvmsg_fast
    if recv is None:
        recv = _bind_recvmsg_fast()
    ref = ctypes.byref(buf)  # passed as is; an array would be converted on every call
    view: Any = buf  # slicing a c_char array gives bytes (one copy)
    msgs: list[bytes] = []
    append = msgs.append
    for _ in range(max_msgs):
        n = recv(u, ref, size)
        if n <= 0:
            break
        append(view[:n])
    return msgs


def msgctrl_init(mctrl: SrtMsgCtrl) -> None:
    """`srt_msgctrl_init(&mctrl)`: libsrt's defaults (msgttl -1, boundary 3, msgno -1)."""
    _l().srt_msgctrl_init(ctypes.byref(mctrl))


def bstats(u: int, perf: SrtTraceBStats, clear: bool = False) -> int:
    """`srt_bstats(u, &perf, clear)`: fills `perf`; totals are since connection start."""
    return int(_l().srt_bstats(u, ctypes.byref(perf), int(clear)))


def getsndbuffer(u: int) -> tuple[int, int, int]:
    """`srt_getsndbuffer(u, &blocks, &bytes)`: (rc, packets, bytes) not yet acknowledged."""
    blocks = ctypes.c_size_t(0)
    nbytes = ctypes.c_size_t(0)
    rc = int(_l().srt_getsndbuffer(u, ctypes.byref(blocks), ctypes.byref(nbytes)))
    return rc, blocks.value, nbytes.value


# ---- epoll -----------------------------------------------------------------------------------


def epoll_create() -> int:
    """`srt_epoll_create()`: an epoll id, or -1."""
    return int(_l().srt_epoll_create())


def epoll_release(eid: int) -> int:
    """`srt_epoll_release(eid)`."""
    return int(_l().srt_epoll_release(eid))


def epoll_set(eid: int, flags: int) -> int:
    """`srt_epoll_set(eid, flags)`, e.g. SRT_EPOLL_ENABLE_EMPTY; returns the previous flags."""
    return int(_l().srt_epoll_set(eid, flags))


def epoll_add_usock(eid: int, u: int, events: int) -> int:
    """`srt_epoll_add_usock(eid, u, &events)`: level-triggered unless SRT_EPOLL_ET is set."""
    ev = ctypes.c_int(events)
    return int(_l().srt_epoll_add_usock(eid, u, ctypes.byref(ev)))


def epoll_update_usock(eid: int, u: int, events: int) -> int:
    """`srt_epoll_update_usock(eid, u, &events)`."""
    ev = ctypes.c_int(events)
    return int(_l().srt_epoll_update_usock(eid, u, ctypes.byref(ev)))


def epoll_remove_usock(eid: int, u: int) -> int:
    """`srt_epoll_remove_usock(eid, u)`."""
    return int(_l().srt_epoll_remove_usock(eid, u))


def epoll_add_ssock(eid: int, fd: int, events: int) -> int:
    """`srt_epoll_add_ssock(eid, fd, &events)`: watch a system file descriptor too."""
    ev = ctypes.c_int(events)
    return int(_l().srt_epoll_add_ssock(eid, fd, ctypes.byref(ev)))


def epoll_remove_ssock(eid: int, fd: int) -> int:
    """`srt_epoll_remove_ssock(eid, fd)`."""
    return int(_l().srt_epoll_remove_ssock(eid, fd))


class EpollWaitArrays:
    """Preallocated output arrays for `epoll_wait` (one per I/O thread, reused every wake-up)."""

    __slots__ = ("lrfds", "lrnum", "readfds", "rnum", "size", "wnum", "writefds")

    def __init__(self, size: int) -> None:
        self.size = size
        self.readfds = (ctypes.c_int32 * size)()
        self.writefds = (ctypes.c_int32 * size)()
        self.lrfds = (ctypes.c_int * 4)()
        self.rnum = ctypes.c_int(0)
        self.wnum = ctypes.c_int(0)
        self.lrnum = ctypes.c_int(0)


def epoll_wait(eid: int, arrays: EpollWaitArrays, timeout_ms: int) -> int:
    """`srt_epoll_wait(eid, readfds, &rnum, writefds, &wnum, timeout, lrfds, &lrnum, NULL, NULL)`.

    Returns the ready count, or -1 (SRT_ETIMEOUT when nothing became ready in `timeout_ms`).
    Sockets in error appear in both sets. The counts in `arrays` are valid only when > 0 is
    returned. Blocks (GIL released) for at most `timeout_ms`, in libsrt's 10 ms steps.
    """
    arrays.rnum.value = arrays.size
    arrays.wnum.value = arrays.size
    arrays.lrnum.value = len(arrays.lrfds)
    return int(
        _l().srt_epoll_wait(
            eid,
            arrays.readfds,
            ctypes.byref(arrays.rnum),
            arrays.writefds,
            ctypes.byref(arrays.wnum),
            timeout_ms,
            arrays.lrfds,
            ctypes.byref(arrays.lrnum),
            None,
            None,
        )
    )


# ---- logging ---------------------------------------------------------------------------------


def setloglevel(level: int) -> None:
    """`srt_setloglevel(level)`: a syslog level; messages less severe are not produced at all."""
    _l().srt_setloglevel(level)


def setlogflags(flags: int) -> None:
    """`srt_setlogflags(flags)`: SRT_LOGF_* bits removing the time/thread/severity/EOL prefix."""
    _l().srt_setlogflags(flags)


def setloghandler(handler: Any) -> None:
    """`srt_setloghandler(NULL, handler)`; `handler` (a LOG_HANDLER) must stay referenced."""
    _l().srt_setloghandler(None, handler)
