"""SRT stream ids: what a caller asks for (publish or request, which path, as whom).

`parse_stream_id(raw, prefix)` is a pure function from the caller's stream id (read in libsrt's
listen callback, before the handshake completes) to a `StreamRequest`, or a `StreamIdError`
carrying the SRT rejection code 1400 the caller sees. Three forms are understood:

- the SRT access-control form `#!::r=live/cam1,m=publish,u=alice` (keys r, m, u, s, h, t;
  vendor and unknown keys are kept in `params` and otherwise ignored);
- MediaMTX's `publish:path[:user:pass][:query]` and `read:path[:user:pass][:query]`;
- anything else is a raw resource, OBS style (`app/key`), always a publish.

Stream ids can carry secrets, so logs, records and reprs use `redact_stream_id` (keys and the
resource kept, secret values replaced by `***`); the authorization hook gets the full request.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from gateway.errors import GatewayError
from gateway.srt.lib import MAX_STREAM_ID_CHARS

Mode = Literal["publish", "request"]
"""What a caller wants: `publish` sends TS into the gateway, `request` pulls TS out of it."""

Form = Literal["access", "mediamtx", "plain"]
"""Which stream id syntax a caller used: `#!::` access control, MediaMTX, or a raw resource."""

_ACCESS_PREFIX: Final = "#!::"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MODES: Final[Mapping[str, Mode]] = {"publish": "publish", "request": "request"}
_MEDIAMTX_ACTIONS: Final[Mapping[str, Mode]] = {"publish": "publish", "read": "request"}

REDACTED: Final = "***"
"""What `redact_stream_id` puts in place of a secret value."""

# A key names a secret when it is `s` (the access-control spec's session id, which services use
# as a token) or contains one of these words, in any case. Wrong guesses only hide a value.
_SECRET_KEY = re.compile(
    r"^s$|pass|pwd|secret|token|key|auth|sig|cred|sess|otp|jwt|bearer|private",
    re.IGNORECASE,
)


class RequestError(GatewayError):
    """Base of the SRT server's request errors: `code` is the SRT rejection code (1400-1599)
    the caller sees when the error is raised at handshake time."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class StreamIdError(RequestError, ValueError):
    """A stream id that cannot be routed (missing, too long, bad syntax, path tricks).

    `code` is always 1400 (SRT_REJX_BAD_REQUEST); `raw` is the offending id, possibly truncated
    to `MAX_STREAM_ID_CHARS` + 1 characters so that logs stay bounded.
    """

    def __init__(self, message: str, *, raw: str | None) -> None:
        super().__init__(message, code=1400)
        self.raw = raw if raw is None else raw[: MAX_STREAM_ID_CHARS + 1]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class StreamRequest:
    """One caller's parsed stream id.

    `resource` is the caller's own name for the broadcast (segments normalized, without the
    server prefix); `path` is the model path it maps to (`prefix/resource`, normalized: no
    leading, trailing or repeated slashes). `user`, `password`, `session` and `host` are ''
    when the caller sent none. `params` holds every key/value the caller sent (access-control
    keys, vendor keys such as `bmd_uuid`, MediaMTX query items), for authorization hooks.
    `raw` is the id as sent. The repr shows only `redacted` (no password, session or secret
    parameter), so a logged request leaks nothing.
    """

    mode: Mode
    resource: str
    path: str
    user: str = ""
    password: str = ""
    session: str = ""
    host: str = ""
    form: Form = "plain"
    params: Mapping[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def is_publish(self) -> bool:
        """True when the caller wants to publish (send TS into the gateway)."""
        return self.mode == "publish"

    @property
    def redacted(self) -> str:
        """The stream id with secret values replaced (`redact_stream_id(raw)`): for logs."""
        return redact_stream_id(self.raw)

    def __repr__(self) -> str:
        return (
            f"StreamRequest(mode={self.mode!r}, path={self.path!r}, user={self.user!r}, "
            f"form={self.form!r}, stream_id={self.redacted!r})"
        )


def normalize_prefix(prefix: str) -> str:
    """Return `prefix` as a normalized path ('' for none): `/live/` -> `live`.

    Raises `ValueError` for `.`/`..` segments or control characters: a prefix is configuration,
    and a bad one is the operator's mistake, not the caller's.
    """
    segments = [s for s in prefix.strip().split("/") if s]
    for segment in segments:
        if segment in (".", "..") or _CONTROL_CHARS.search(segment):
            raise ValueError(f"invalid path prefix: {prefix!r}")
    return "/".join(segments)


def join_path(prefix: str, resource: str) -> str:
    """Join a normalized `prefix` and a normalized `resource` on a segment boundary."""
    if not prefix:
        return resource
    return f"{prefix}/{resource}"


def parse_stream_id(
    raw: str | None, prefix: str = "", *, default_mode: Mode = "publish"
) -> StreamRequest:
    """Parse a caller's SRT stream id into a `StreamRequest` routed under `prefix`.

    `prefix` is joined on a segment boundary (`live` + `cam1` -> `live/cam1`); it is normalized
    here, so `live/` and `/live` work too. `default_mode` applies to `#!::` ids without an `m=`
    key (publish by default, as moq-srt does; the SRT access-control spec says request).

    Raises `StreamIdError` (code 1400) for: no or blank id; an id over 512 characters; control
    characters; a `#!::` id with an entry lacking `=`, no `r=`, or an `m=` other than
    `publish`/`request`; a MediaMTX id with an unknown action, missing path or a lone user; and
    any resource with empty, `.` or `..` segments (one leading and one trailing slash are
    tolerated), so that no caller can name a path outside `prefix`.
    """
    if raw is None:
        raise StreamIdError("no stream id", raw=None)
    if len(raw) > MAX_STREAM_ID_CHARS:
        raise StreamIdError(f"stream id longer than {MAX_STREAM_ID_CHARS} characters", raw=raw)
    text = raw.strip()
    if _looks_percent_encoded(text):
        text = urllib.parse.unquote(text)
    if not text:
        raise StreamIdError("empty stream id", raw=raw)
    if _CONTROL_CHARS.search(text):
        raise StreamIdError("control characters in stream id", raw=raw)
    norm_prefix = normalize_prefix(prefix)

    if text.startswith(_ACCESS_PREFIX):
        return _parse_access(text, raw, norm_prefix, default_mode)
    action, sep, _ = text.partition(":")
    if sep and action in _MEDIAMTX_ACTIONS:
        return _parse_mediamtx(text, raw, norm_prefix)
    resource = _normalize_resource(text, raw)
    return StreamRequest(
        mode="publish",
        resource=resource,
        path=join_path(norm_prefix, resource),
        form="plain",
        raw=raw,
    )


def _looks_percent_encoded(text: str) -> bool:
    # A whole id percent-encoded once more than needed (`%23%21%3A%3Ar%3D...`): some tools encode
    # the stream id when building the URL and the client passes it through undecoded.
    return text.upper().startswith(("%23%21", "%23!"))


def _parse_access(text: str, raw: str, prefix: str, default_mode: Mode) -> StreamRequest:
    params: dict[str, str] = {}
    body = text[len(_ACCESS_PREFIX) :]
    if body.strip():
        for item in body.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise StreamIdError("stream id entry without key=value", raw=raw)
            params[key] = value.strip()
    resource_raw = params.get("r", "")
    if not resource_raw:
        raise StreamIdError("stream id has no resource (r=)", raw=raw)
    mode_raw = params.get("m", "")
    if mode_raw:
        mode = _MODES.get(mode_raw.lower())
        if mode is None:
            raise StreamIdError(f"unsupported mode m={mode_raw[:16]!r}", raw=raw)
    else:
        mode = default_mode
    resource = _normalize_resource(resource_raw, raw)
    return StreamRequest(
        mode=mode,
        resource=resource,
        path=join_path(prefix, resource),
        user=params.get("u", ""),
        session=params.get("s", ""),
        host=params.get("h", ""),
        form="access",
        params=params,
        raw=raw,
    )


def _parse_mediamtx(text: str, raw: str, prefix: str) -> StreamRequest:
    # action:path, action:path:query, action:path:user:pass, action:path:user:pass:query
    parts = text.split(":")
    action, resource_raw = parts[0], parts[1]
    user = password = query = ""
    rest = parts[2:]
    if len(rest) == 1:
        query = rest[0]
    elif len(rest) == 2:
        user, password = rest
    elif len(rest) == 3:
        user, password, query = rest
    elif len(rest) > 3:
        raise StreamIdError("too many ':' fields in MediaMTX-style stream id", raw=raw)
    if not resource_raw:
        raise StreamIdError("MediaMTX-style stream id has no path", raw=raw)
    if len(rest) in (2, 3) and not user:
        raise StreamIdError("MediaMTX-style stream id has a password but no user", raw=raw)
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True)) if query else {}
    resource = _normalize_resource(resource_raw, raw)
    return StreamRequest(
        mode=_MEDIAMTX_ACTIONS[action],
        resource=resource,
        path=join_path(prefix, resource),
        user=user,
        password=password,
        form="mediamtx",
        params=params,
        raw=raw,
    )


def _normalize_resource(resource: str, raw: str) -> str:
    text = resource.strip()
    # One leading and one trailing slash are a common typo (`/live/cam1`); anything else that
    # yields an empty segment is refused rather than silently collapsed.
    text = text.removeprefix("/").removesuffix("/")
    if not text:
        raise StreamIdError("empty resource in stream id", raw=raw)
    segments = text.split("/")
    for segment in segments:
        if not segment:
            raise StreamIdError("empty path segment in stream id", raw=raw)
        if segment in (".", ".."):
            raise StreamIdError(f"path segment {segment!r} in stream id", raw=raw)
        if segment != segment.strip():
            raise StreamIdError("path segment with surrounding whitespace", raw=raw)
    return "/".join(segments)


def redact_stream_id(raw: str | None) -> str:
    """`raw` without its secrets, for logs, records and reprs ('' for None).

    The rule (README, "Stream ids"): keys, the resource and the user are kept; the value of a
    secret key (`s`, or a key containing pass, pwd, secret, token, key, auth, sig, cred,
    session, otp, jwt, bearer or private, in any case) becomes `***`, as do MediaMTX's password
    field and any entry that is not `key=value` (it may be the tail of a secret containing the
    separator; in a MediaMTX id, all past a query that holds `:`). A percent-encoded id is
    decoded first. Works on malformed ids too; only the first `MAX_STREAM_ID_CHARS` + 1
    characters are looked at, so the result is bounded.
    """
    if not raw:
        return ""
    text = raw[: MAX_STREAM_ID_CHARS + 1]
    stripped = text.strip()
    if _looks_percent_encoded(stripped):
        text = stripped = urllib.parse.unquote(stripped)
    if stripped.startswith(_ACCESS_PREFIX):
        body = stripped[len(_ACCESS_PREFIX) :]
        return _ACCESS_PREFIX + ",".join(_redact_item(item) for item in body.split(","))
    action, sep, _ = stripped.partition(":")
    if sep and action in _MEDIAMTX_ACTIONS:
        return _redact_mediamtx(stripped)
    return text


def _redact_item(item: str) -> str:
    key, sep, value = item.partition("=")
    if not sep:
        return item if not item.strip() else REDACTED
    if _SECRET_KEY.search(key.strip()):
        return f"{key}={REDACTED}"
    return f"{key}={value}"


def _redact_mediamtx(text: str) -> str:
    # action:path, action:path:query, action:path:user:pass, action:path:user:pass:query;
    # with more fields than that, everything after the user is hidden.
    parts = text.split(":")
    head, rest = parts[:2], parts[2:]
    if rest and "=" in rest[0]:
        # A query whose values hold ':' (not a user): hide everything past its first part.
        return ":".join([*head, _redact_query(rest[0]), *([REDACTED] if rest[1:] else [])])
    if len(rest) == 1:
        return ":".join([*head, _redact_query(rest[0])])
    if len(rest) == 2:
        return ":".join([*head, rest[0], REDACTED])
    if len(rest) == 3:
        return ":".join([*head, rest[0], REDACTED, _redact_query(rest[2])])
    if len(rest) > 3:
        return ":".join([*head, rest[0], REDACTED])
    return text


def _redact_query(query: str) -> str:
    return "&".join(_redact_item(item) for item in query.split("&"))
