"""Broadcast paths: slash-separated names, normalized once at the origin's door.

Leading and trailing slashes are trimmed and repeated slashes collapsed, so `"/live//cam1/"` and
`"live/cam1"` name the same broadcast. Prefixes match on segment boundaries.
"""

from __future__ import annotations

__all__ = ["normalize_path", "path_has_prefix"]


def normalize_path(path: str) -> str:
    """Return `path` with empty segments removed (`"/a//b/"` -> `"a/b"`); `""` stays `""`.

    Raises `ValueError` for a `"."` or `".."` segment (paths are names, never relative).
    """
    segments = [s for s in path.split("/") if s]
    for segment in segments:
        if segment in (".", ".."):
            raise ValueError(f"path {path!r} has a {segment!r} segment")
    return "/".join(segments)


def path_has_prefix(path: str, prefix: str) -> bool:
    """True when normalized `path` equals `prefix` or lies under it on a segment boundary.

    `"live/cam1"` has prefix `"live"` and `""`, not `"liv"`. Both arguments must be normalized.
    """
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix + "/")
