"""The hang catalog: which media tracks a broadcast has and how to decode them.

The importer builds a `Catalog` and publishes `Catalog.to_json()` as one group of the
`catalog.json` track per version; the exporter (and any MoQ viewer) reads it back with
`Catalog.from_json`. The JSON shape is the one moq-rs's `hang` crate reads: camelCase fields,
`None` fields omitted, renditions keyed by track name, unknown fields tolerated and preserved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mux.errors import MalformedCatalog

#: Name of the catalog track in a broadcast.
CATALOG_TRACK = "catalog.json"

#: Default delivery priorities (moq-rs `hang::catalog::priority`): catalog, audio, video.
CATALOG_PRIORITY = 100
AUDIO_PRIORITY = 80
VIDEO_PRIORITY = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """How each frame of a track is framed; `kind="legacy"` is varint(timestamp_us) + payload.

    `extra` keeps the other fields of the JSON object (e.g. a CMAF `init`) verbatim.
    """

    kind: str = "legacy"
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object for this container."""
        return {"kind": self.kind, **self.extra}

    @classmethod
    def from_dict(cls, value: object) -> Container:
        """Parse a JSON container object; `MalformedCatalog` if it is not one."""
        if value is None:
            return LEGACY
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise MalformedCatalog(f"container must be an object with a string kind: {value!r}")
        extra = {k: v for k, v in value.items() if k != "kind"}
        return cls(kind=value["kind"], extra=extra)


#: The container every track the TS importer creates uses.
LEGACY = Container()


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoConfig:
    """One video rendition (WebCodecs `VideoDecoderConfig` plus hang's fields).

    `codec` is a WebCodecs codec string (`avc3.64001f`, `hev1.1.6.L93.B0`); `description` is
    avcC/hvcC bytes when parameter sets are out of band (None for avc3/hev1, whose keyframes
    carry them); sizes are coded pixels; `bitrate` in bits/s; `jitter_ms` in milliseconds.
    """

    codec: str
    description: bytes | None = None
    coded_width: int | None = None
    coded_height: int | None = None
    display_ratio_width: int | None = None
    display_ratio_height: int | None = None
    bitrate: int | None = None
    framerate: float | None = None
    optimize_for_latency: bool | None = None
    container: Container = LEGACY
    jitter_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the camelCase JSON object, without the fields that are None."""
        out: dict[str, Any] = {"codec": self.codec}
        _put(out, "description", None if self.description is None else self.description.hex())
        _put(out, "codedWidth", self.coded_width)
        _put(out, "codedHeight", self.coded_height)
        _put(out, "displayRatioWidth", self.display_ratio_width)
        _put(out, "displayRatioHeight", self.display_ratio_height)
        _put(out, "bitrate", self.bitrate)
        _put(out, "framerate", self.framerate)
        _put(out, "optimizeForLatency", self.optimize_for_latency)
        out["container"] = self.container.to_dict()
        _put(out, "jitter", self.jitter_ms)
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    @classmethod
    def from_dict(cls, value: object) -> VideoConfig:
        """Parse one JSON video rendition; `MalformedCatalog` if a known field has a bad type."""
        obj = _object(value, "video rendition")
        return cls(
            codec=_req_str(obj, "codec"),
            description=_opt_hex(obj, "description"),
            coded_width=_opt_int(obj, "codedWidth"),
            coded_height=_opt_int(obj, "codedHeight"),
            display_ratio_width=_opt_int(obj, "displayRatioWidth"),
            display_ratio_height=_opt_int(obj, "displayRatioHeight"),
            bitrate=_opt_int(obj, "bitrate"),
            framerate=_opt_float(obj, "framerate"),
            optimize_for_latency=_opt_bool(obj, "optimizeForLatency"),
            container=Container.from_dict(obj.get("container")),
            jitter_ms=_opt_int(obj, "jitter"),
            extra={k: v for k, v in obj.items() if k not in _VIDEO_FIELDS},
        )


_VIDEO_FIELDS = frozenset(
    [
        "codec",
        "description",
        "codedWidth",
        "codedHeight",
        "displayRatioWidth",
        "displayRatioHeight",
        "bitrate",
        "framerate",
        "optimizeForLatency",
        "container",
        "jitter",
    ]
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioConfig:
    """One audio rendition (WebCodecs `AudioDecoderConfig` plus hang's fields).

    `codec` is `mp4a.40.<aot>`, `opus`, `mp2`, `ac-3` or `ec-3`; `sample_rate` in Hz;
    `description` is the AudioSpecificConfig for AAC; `bitrate` in bits/s; `jitter_ms` in ms.
    """

    codec: str
    sample_rate: int
    channels: int
    bitrate: int | None = None
    description: bytes | None = None
    container: Container = LEGACY
    jitter_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the camelCase JSON object, without the fields that are None."""
        out: dict[str, Any] = {
            "codec": self.codec,
            "sampleRate": self.sample_rate,
            "numberOfChannels": self.channels,
        }
        _put(out, "bitrate", self.bitrate)
        _put(out, "description", None if self.description is None else self.description.hex())
        out["container"] = self.container.to_dict()
        _put(out, "jitter", self.jitter_ms)
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    @classmethod
    def from_dict(cls, value: object) -> AudioConfig:
        """Parse one JSON audio rendition; `MalformedCatalog` if a required field is missing."""
        obj = _object(value, "audio rendition")
        sample_rate = _opt_int(obj, "sampleRate")
        channels = _opt_int(obj, "numberOfChannels")
        if sample_rate is None or channels is None:
            raise MalformedCatalog("audio rendition needs sampleRate and numberOfChannels")
        return cls(
            codec=_req_str(obj, "codec"),
            sample_rate=sample_rate,
            channels=channels,
            bitrate=_opt_int(obj, "bitrate"),
            description=_opt_hex(obj, "description"),
            container=Container.from_dict(obj.get("container")),
            jitter_ms=_opt_int(obj, "jitter"),
            extra={k: v for k, v in obj.items() if k not in _AUDIO_FIELDS},
        )


_AUDIO_FIELDS = frozenset(
    ["codec", "sampleRate", "numberOfChannels", "bitrate", "description", "container", "jitter"]
)


@dataclass(slots=True, kw_only=True)
class Catalog:
    """A whole catalog: video and audio renditions keyed by track name.

    Mutable while the importer builds it; `to_json()` snapshots it. `video_extra` keeps the
    video section's other fields (`display`, `rotation`, `flip`), `extra` the root's other
    sections, so a catalog read and written back loses nothing.
    """

    video: dict[str, VideoConfig] = field(default_factory=dict)
    audio: dict[str, AudioConfig] = field(default_factory=dict)
    video_extra: dict[str, Any] = field(default_factory=dict)
    audio_extra: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def track_names(self) -> list[str]:
        """Return every media track the catalog names, video first, each sorted by name."""
        return sorted(self.video) + sorted(self.audio)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object (renditions sorted by name, like moq-rs's BTreeMap)."""
        video = {"renditions": {k: self.video[k].to_dict() for k in sorted(self.video)}}
        audio = {"renditions": {k: self.audio[k].to_dict() for k in sorted(self.audio)}}
        video.update((k, v) for k, v in self.video_extra.items() if k != "renditions")
        audio.update((k, v) for k, v in self.audio_extra.items() if k != "renditions")
        out: dict[str, Any] = {"video": video, "audio": audio}
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    def to_json(self) -> bytes:
        """Serialize to compact UTF-8 JSON, the payload of one `catalog.json` group."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, value: object) -> Catalog:
        """Build a catalog from a parsed JSON object; `MalformedCatalog` on a bad shape."""
        obj = _object(value, "catalog")
        video_section = _object(obj.get("video", {}), "video section")
        audio_section = _object(obj.get("audio", {}), "audio section")
        video_renditions = _object(video_section.get("renditions", {}), "video renditions")
        audio_renditions = _object(audio_section.get("renditions", {}), "audio renditions")
        return cls(
            video={str(k): VideoConfig.from_dict(v) for k, v in video_renditions.items()},
            audio={str(k): AudioConfig.from_dict(v) for k, v in audio_renditions.items()},
            video_extra={k: v for k, v in video_section.items() if k != "renditions"},
            audio_extra={k: v for k, v in audio_section.items() if k != "renditions"},
            extra={k: v for k, v in obj.items() if k not in ("video", "audio")},
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Catalog:
        """Parse a `catalog.json` group payload; `MalformedCatalog` if it is not a catalog."""
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedCatalog(f"catalog is not JSON: {exc}") from exc
        return cls.from_dict(value)


def _put(out: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        out[key] = value


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedCatalog(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _req_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedCatalog(f"{key} must be a string, got {value!r}")
    return value


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedCatalog(f"{key} must be an integer, got {value!r}")
    return value


def _opt_float(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedCatalog(f"{key} must be a number, got {value!r}")
    return float(value)


def _opt_bool(obj: dict[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise MalformedCatalog(f"{key} must be a boolean, got {value!r}")


def _opt_hex(obj: dict[str, Any], key: str) -> bytes | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedCatalog(f"{key} must be a hex string, got {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise MalformedCatalog(f"{key} is not hex: {value!r}") from exc
