"""The hang catalog serializes to the shape moq-rs reads and parses back without loss."""

from __future__ import annotations

import json

import pytest

from mux.catalog import LEGACY, AudioConfig, Catalog, Container, VideoConfig
from mux.errors import Malformed, MalformedCatalog

# The shape of moq-rs's `hang::catalog::root` test, with our track names.
HANG_JSON = (
    '{"video":{"renditions":{"0.avc3":{"codec":"avc3.64001f","codedWidth":1280,'
    '"codedHeight":720,"bitrate":6000000,"framerate":30.0,"container":{"kind":"legacy"}}}},'
    '"audio":{"renditions":{"1.aac":{"codec":"mp4a.40.2","sampleRate":48000,'
    '"numberOfChannels":2,"description":"1190","container":{"kind":"legacy"}}}}}'
)


def test_catalog_serializes_byte_exact_to_the_hang_shape() -> None:
    catalog = Catalog(
        video={
            "0.avc3": VideoConfig(
                codec="avc3.64001f",
                coded_width=1280,
                coded_height=720,
                bitrate=6_000_000,
                framerate=30.0,
            )
        },
        audio={
            "1.aac": AudioConfig(
                codec="mp4a.40.2", sample_rate=48_000, channels=2, description=b"\x11\x90"
            )
        },
    )
    assert catalog.to_json() == HANG_JSON.encode()
    assert Catalog.from_json(HANG_JSON) == catalog


def test_empty_catalog_still_has_both_sections() -> None:
    assert json.loads(Catalog().to_json()) == {
        "video": {"renditions": {}},
        "audio": {"renditions": {}},
    }


def test_unknown_fields_survive_a_round_trip() -> None:
    source = {
        "video": {
            "renditions": {
                "v": {
                    "codec": "hev1.1.6.L93.B0",
                    "container": {"kind": "cmaf", "init": "AA=="},
                    "jitter": 40,
                    "timeline": {"track": "v.timeline.z", "timescale": 1000},
                }
            },
            "display": {"width": 1, "height": 2},
        },
        "audio": {"renditions": {}},
        "scte35": {"x": 1},
    }
    catalog = Catalog.from_dict(source)
    assert catalog.video["v"].container == Container(kind="cmaf", extra={"init": "AA=="})
    assert catalog.video["v"].jitter_ms == 40
    assert json.loads(catalog.to_json()) == source


def test_missing_container_defaults_to_legacy() -> None:
    catalog = Catalog.from_json(
        b'{"audio":{"renditions":{"a":{"codec":"opus","sampleRate":48000,"numberOfChannels":2}}}}'
    )
    assert catalog.audio["a"].container == LEGACY
    assert catalog.video == {}
    assert catalog.track_names() == ["a"]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"video": []}',
        b'{"video": {"renditions": {"v": {"codedWidth": 3}}}}',
        b'{"video": {"renditions": {"v": {"codec": "avc3", "codedWidth": "wide"}}}}',
        b'{"audio": {"renditions": {"a": {"codec": "opus"}}}}',
        b'{"audio": {"renditions": {"a": {"codec": "opus", "sampleRate": 1,'
        b' "numberOfChannels": 1, "description": "xyz"}}}}',
        b'{"audio": {"renditions": {"a": {"codec": "opus", "sampleRate": 1,'
        b' "numberOfChannels": 1, "container": {"kind": 5}}}}}',
    ],
)
def test_bad_catalogs_raise_malformed_catalog(payload: bytes) -> None:
    with pytest.raises(MalformedCatalog) as info:
        Catalog.from_json(payload)
    assert isinstance(info.value, Malformed)
    assert isinstance(info.value, ValueError)
