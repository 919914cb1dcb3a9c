"""Who may publish and watch, from configuration: a users table and an HTTP authorization hook,
turned into one `AuthHook` that `moqsrt serve` gives the SRT server (and, through
`gateway.moq.auth.moq_auth_from_srt`, the MoQ listener).

Credentials a caller presents: its user (`u=` in a `#!::` stream id, MediaMTX's `user`) and a
secret, the first non-empty of its password (MediaMTX), session (`s=`), or its `token`/`jwt`
parameter (MoQ WebTransport `?jwt=`/`?token=` arrive as the password). The users table is
asked first; when no entry knows the caller's credentials and an HTTP hook is configured, the
hook decides. Without credentials or with wrong ones the caller gets 1401 (MoQ: 401); known
credentials without the right to that path and action get 1403 (MoQ: 403). A hook that is down,
slow, or answers badly refuses with 1403: it fails closed. Secrets never reach a repr or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import hmac
import json
import time
import tomllib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import structlog

from gateway.auth import REJECT_FORBIDDEN, REJECT_UNAUTHORIZED, AuthDecision
from gateway.streamid import StreamRequest, normalize_prefix

__all__ = [
    "ACTIONS",
    "CACHE_MAX_ENTRIES",
    "ConfiguredAuth",
    "HttpAuth",
    "UserEntry",
    "UsersAuth",
    "caller_secret",
    "load_users",
    "parse_users",
]

_log = structlog.get_logger("moqsrt.auth")

Action = Literal["publish", "read"]
ACTIONS: Final = ("publish", "read")
CACHE_MAX_ENTRIES: Final = 4096
"""Decisions the HTTP hook's cache holds at most (the oldest go first)."""
_SHA256_PREFIX: Final = "sha256:"
_ENTRY_KEYS: Final = frozenset(
    {"user", "password", "token", "paths", "actions", "tier", "passphrase"}
)
_MAX_ANSWER_BYTES: Final = 64 * 1024
_MAX_USERS_FILE_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEntry:
    """One row of the users table.

    A caller matches it with `user` and `password`, or with `token` alone (a bearer secret,
    whatever user it names; with `user` set too, both must match). A secret is stored as
    written: plain text, or `sha256:` followed by the SHA-256 of the secret in hex. `paths` are
    model paths (after the server prefix), each a prefix on a segment boundary (`live` covers
    `live/cam1`) or a glob (`live/*/hd`, fnmatch syntax); `*` alone is every path. `actions` is
    a subset of publish/read. `tier` labels the sessions' usage; `passphrase` (10..79
    characters, or None for the server's default) is the SRT passphrase the caller must use.
    """

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    paths: tuple[str, ...] = ("*",)
    actions: frozenset[str] = frozenset(ACTIONS)
    tier: str = "default"
    passphrase: str | None = field(default=None, repr=False)

    def allows(self, action: str, path: str) -> bool:
        """True when this entry may `action` (publish/read) the model `path`."""
        return action in self.actions and any(_path_matches(p, path) for p in self.paths)


def _path_matches(pattern: str, path: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(path, pattern)
    return pattern == "" or path == pattern or path.startswith(pattern + "/")


def _secret_matches(stored: str, given: str) -> bool:
    if stored.startswith(_SHA256_PREFIX):
        digest = hashlib.sha256(given.encode("utf-8")).hexdigest()
        return hmac.compare_digest(digest, stored[len(_SHA256_PREFIX) :].lower())
    return hmac.compare_digest(stored.encode("utf-8"), given.encode("utf-8"))


def caller_secret(request: StreamRequest) -> str:
    """The secret a caller presented: password, else session (`s=`), else a `token`/`jwt`
    parameter; '' for none."""
    return (
        request.password
        or request.session
        or request.params.get("token", "")
        or request.params.get("jwt", "")
    )


def _action(request: StreamRequest) -> Action:
    return "publish" if request.is_publish else "read"


def load_users(value: Any) -> tuple[UserEntry, ...]:
    """The TOML `users` value: an array of tables, or the name of a TOML file holding
    `[[users]]` tables ('' or "off": no users). Raises `ValueError` as `parse_users` does, and
    for a file that cannot be read (the message names the file, never its content)."""
    if value in ("", "off"):
        return ()
    if not isinstance(value, str):
        return parse_users(value)
    path = Path(value)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_USERS_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_USERS_FILE_BYTES:
        raise ValueError(f"{path} is larger than {_MAX_USERS_FILE_BYTES} bytes")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ValueError(f"{path} is not a valid TOML file") from None
    if set(table) != {"users"}:
        raise ValueError(f"{path} must hold only [[users]] tables")
    try:
        return parse_users(table["users"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parse_users(value: Any) -> tuple[UserEntry, ...]:
    """Parse the TOML `users` value (an array of tables) into entries. Raises `ValueError` with
    a one-line reason naming the entry by index and user, never a secret."""
    if not isinstance(value, list):
        raise ValueError("expected an array of tables ([[users]])")
    return tuple(_parse_entry(i, item) for i, item in enumerate(value))


def _parse_entry(index: int, item: Any) -> UserEntry:
    where = f"entry {index}"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a table")
    unknown = set(item) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    text: dict[str, str] = {}
    for key in ("user", "password", "token", "tier"):
        raw = item.get(key, "")
        if not isinstance(raw, str) or any(ord(c) < 32 or c == "\x7f" for c in raw):
            raise ValueError(f"{where}: {key} must be a string of printable characters")
        text[key] = raw
    if text["user"]:
        where = f"entry {index} ({text['user']})"
    if not text["token"] and not (text["user"] and text["password"]):
        raise ValueError(f"{where}: needs user and password, or token")
    for key in ("password", "token"):
        secret = text[key]
        if secret.startswith(_SHA256_PREFIX):
            hexdigest = secret[len(_SHA256_PREFIX) :]
            if len(hexdigest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hexdigest):
                raise ValueError(f"{where}: {key} 'sha256:' must be followed by 64 hex digits")
    paths = item.get("paths", ["*"])
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError(f"{where}: paths must be a non-empty array of strings")
    normalized: list[str] = []
    for pattern in paths:
        if pattern.strip() in ("*", ""):
            normalized.append("*" if pattern.strip() == "*" else "")
            continue
        try:
            normalized.append(normalize_prefix(pattern))
        except ValueError:
            raise ValueError(f"{where}: bad path {pattern[:40]!r}") from None
    actions = item.get("actions", list(ACTIONS))
    if (
        not isinstance(actions, list)
        or not actions
        or not all(isinstance(a, str) and a in ACTIONS for a in actions)
    ):
        raise ValueError(f"{where}: actions must be a non-empty array of 'publish' and 'read'")
    passphrase = item.get("passphrase")
    if passphrase is not None and (
        not isinstance(passphrase, str) or not 10 <= len(passphrase) <= 79
    ):
        raise ValueError(f"{where}: passphrase must have 10 to 79 characters")
    return UserEntry(
        user=text["user"],
        password=text["password"],
        token=text["token"],
        paths=tuple(normalized),
        actions=frozenset(actions),
        tier=text["tier"] or "default",
        passphrase=passphrase or None,
    )


class UsersAuth:
    """Decides callers from a users table (see the module docstring for the codes)."""

    def __init__(self, users: Sequence[UserEntry]) -> None:
        self._users = tuple(users)

    def lookup(self, request: StreamRequest) -> list[UserEntry]:
        """The entries whose credentials the caller presented (empty: unknown caller)."""
        secret = caller_secret(request)
        if not secret:
            return []
        found = []
        for entry in self._users:
            if entry.token:
                if (not entry.user or entry.user == request.user) and _secret_matches(
                    entry.token, secret
                ):
                    found.append(entry)
            elif entry.user == request.user and _secret_matches(entry.password, secret):
                found.append(entry)
        return found

    async def __call__(self, request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        entries = self.lookup(request)
        if not entries:
            return AuthDecision(accept=False, code=REJECT_UNAUTHORIZED)
        return _decide(entries, request)


def _decide(entries: Sequence[UserEntry], request: StreamRequest) -> AuthDecision:
    action = _action(request)
    for entry in entries:
        if entry.allows(action, request.path):
            return AuthDecision(tier=entry.tier, passphrase=entry.passphrase)
    return AuthDecision(accept=False, code=REJECT_FORBIDDEN)


class HttpAuth:
    """Asks an HTTP endpoint about each caller: POSTs JSON `{action, mode, path, resource,
    user, password, session, params, peer}` (`action` publish/read; `peer` "host:port") and
    reads a JSON answer `{"accept": bool, "code"?: int, "tier"?: str, "passphrase"?: str}`.
    A 401 or 403 status without such a body rejects with 1401 / 1403.

    Bounded by `timeout_s`; anything but a well-formed answer (connection refused, timeout,
    other status, bad JSON) rejects with 1403 (fails closed) and logs `auth.http_failed` without
    the request's secrets. Answers (accept or reject) are cached for `cache_s` (0: off), at most
    `CACHE_MAX_ENTRIES`, keyed by a SHA-256 of the request, so the cache holds no secret in
    clear. The aiohttp session is opened on first use and closed by `aclose`.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, cache_s: float = 5.0) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._cache: OrderedDict[str, tuple[float, AuthDecision]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpAuth(timeout_s={self._timeout_s}, cache_s={self._cache_s})"

    async def __call__(self, request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        body = {
            "action": _action(request),
            "mode": request.mode,
            "path": request.path,
            "resource": request.resource,
            "user": request.user,
            "password": request.password,
            "session": request.session,
            "params": dict(request.params),
            "peer": f"{peer[0]}:{peer[1]}",
        }
        # The peer's port changes per connection: keep it out of the cache key.
        keyed = {**body, "peer": peer[0]}
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with asyncio.timeout(self._timeout_s):
                decision = await self._ask(body)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            _log.warning(
                "auth.http_failed", path=request.path, action=body["action"], error=_reason(exc)
            )
            return AuthDecision(accept=False, code=REJECT_FORBIDDEN)
        if self._cache_s > 0:
            self._cache[key] = (now + self._cache_s, decision)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)
        return decision

    async def _ask(self, body: dict[str, Any]) -> AuthDecision:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(self._url, json=body, allow_redirects=False) as response:
            data = await response.content.read(_MAX_ANSWER_BYTES + 1)
            if response.status in (401, 403) and not data.strip():
                return AuthDecision(accept=False, code=1000 + response.status)
            if response.status != 200:
                raise ValueError(f"status {response.status}")
        if len(data) > _MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
        return _parse_answer(json.loads(data))

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    # Class name only for client errors: their text can hold the URL (and so its token).
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, ValueError) else type(exc).__name__


def _parse_answer(data: Any) -> AuthDecision:
    if not isinstance(data, dict) or not isinstance(data.get("accept"), bool):
        raise ValueError("answer has no boolean 'accept'")
    if not data["accept"]:
        code = data.get("code", REJECT_FORBIDDEN)
        if isinstance(code, bool) or not isinstance(code, int) or not 1000 <= code <= 2999:
            raise ValueError("answer's 'code' is not an SRT rejection code (1000..2999)")
        return AuthDecision(accept=False, code=code)
    tier = data.get("tier", "default")
    passphrase = data.get("passphrase")
    if not isinstance(tier, str) or not tier or len(tier) > 64:
        raise ValueError("answer's 'tier' is not a short string")
    if passphrase is not None and (
        not isinstance(passphrase, str) or not 10 <= len(passphrase) <= 79
    ):
        raise ValueError("answer's 'passphrase' is not 10 to 79 characters")
    return AuthDecision(tier=tier, passphrase=passphrase)


class ConfiguredAuth:
    """The `AuthHook` `moqsrt serve` builds: the users table first, then the HTTP hook for
    callers the table does not know (without a hook, they get 1401). `aclose` ends the hook's
    HTTP session."""

    def __init__(self, users: Sequence[UserEntry] = (), http: HttpAuth | None = None) -> None:
        self._users = UsersAuth(users)
        self._count = len(users)
        self._http = http

    def __repr__(self) -> str:
        return f"ConfiguredAuth(users={self._count}, http={self._http!r})"

    async def __call__(self, request: StreamRequest, peer: tuple[str, int]) -> AuthDecision:
        entries = self._users.lookup(request)
        if entries:
            return _decide(entries, request)
        if self._http is not None:
            return await self._http(request, peer)
        return AuthDecision(accept=False, code=REJECT_UNAUTHORIZED)

    async def aclose(self) -> None:
        """Release the HTTP hook's connections."""
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
