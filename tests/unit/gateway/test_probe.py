"""`moqsrt probe` reports a TS file's catalog, per-track counts and problems."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import probe
from tests.media import expected_counts

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def run_probe(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="moqsrt probe")
    probe.add_arguments(parser)
    return probe.run(parser.parse_args(list(argv)))


def test_json_report_has_the_documented_shape_and_pyav_counts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = FIXTURES / "h264_aac.ts"
    assert run_probe(str(path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert {"catalog", "tracks", "problems", "seconds"} <= set(report)
    assert report["seconds"] > 0
    assert report["problems"] == []
    renditions = {
        **report["catalog"]["video"]["renditions"],
        **report["catalog"]["audio"]["renditions"],
    }
    assert set(report["tracks"]) == set(renditions)
    for counts in expected_counts(path).values():
        (name,) = [n for n, t in report["tracks"].items() if t["pid"] == counts.pid]
        assert report["tracks"][name]["frames"] == counts.frames
        assert report["tracks"][name]["groups"] == counts.groups
        assert report["tracks"][name]["bytes"] > 0
    video = report["catalog"]["video"]["renditions"]["0.avc3"]
    assert (video["codedWidth"], video["codedHeight"]) == (640, 360)
    ingress = report["ingress"]
    assert ingress["frames"] == sum(t["frames"] for t in report["tracks"].values()) + 1


def test_human_report_lists_tracks_and_the_streams_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_probe(str(FIXTURES / "corrupt.ts")) == 0
    out = capsys.readouterr().out
    assert "0.avc3     video  avc3.64000d" in out
    assert "1.aac      audio  mp4a.40.2" in out
    assert "problems: 15 (continuity_gap 6, sync_lost 6, transport_error 3)" in out
    assert "PID 0x100: continuity gap, expected CC" in out
    assert "Traceback" not in out


def test_standard_input_is_read_with_a_dash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (FIXTURES / "opus.ts").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run_probe("-", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tracks"]["0.opus"]["frames"] == 101  # ffprobe -count_packets
    assert report["input_bytes"] == len(data)


def test_a_missing_file_is_a_clear_error_with_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.ts"
    assert run_probe(str(missing)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot read {missing}: No such file or directory" in captured.err


def test_a_file_without_ts_packets_reports_no_streams(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"hello, this is not a transport stream\n" * 100)
    assert run_probe(str(junk)) == 0
    out = capsys.readouterr().out
    assert "catalog: no decodable audio or video stream found" in out
    assert "stream does not start on a packet boundary" in out


def test_progress_goes_to_a_terminal_stderr_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(probe, "READ_BYTES", 188 * 64)
    monkeypatch.setattr(probe, "_PROGRESS_EVERY_S", 0.0)
    assert run_probe(str(FIXTURES / "h264_aac.ts")) == 0
    assert "probe: " in tty.getvalue()
    assert "probe: " not in capsys.readouterr().out  # progress never pollutes stdout


def _ffprobe_packets(path: Path) -> dict[int, int]:
    """Packets per stream PID, as ffprobe counts them."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=id,nb_read_packets", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    streams = json.loads(out.stdout)["streams"]
    return {int(s["id"], 16): int(s["nb_read_packets"]) for s in streams}


def test_every_stream_is_listed_with_its_kind_language_descriptors_and_handling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = FIXTURES / "feed.ts"
    assert run_probe(str(path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["program"]["program_number"] == 0x101
    assert report["program"]["pmt_pid"] == 0x20
    assert report["program"]["descriptors"] == [
        {"tag": 5, "name": "registration", "data": b"CUEI".hex()}
    ]
    listed = {
        s["pid"]: (s["stream_type"], s["kind"], s["language"], s["handling"], s["units"])
        for s in report["streams"]
    }
    assert listed == {
        0x100: (0x1B, "h264", None, "decoded", "frames"),
        0x101: (0x0F, "aac", "eng", "decoded", "frames"),
        0x102: (0x0F, "aac", "fra", "decoded", "frames"),
        0x1F4: (0x86, "scte35", None, "opaque", "section"),
        0x300: (0x06, "dvbsub", "eng", "opaque", "pes"),
        0x301: (0x06, "teletext", "deu", "opaque", "pes"),
        0x302: (0x06, "klv", None, "opaque", "pes"),
    }
    subtitles = next(s for s in report["streams"] if s["pid"] == 0x300)
    assert subtitles["descriptors"] == [
        {"tag": 0x59, "name": "subtitling", "data": "656e671000010001"}
    ]
    # every unit of every stream is a frame of its track (ffprobe's packet counts)
    counts = _ffprobe_packets(path)
    for stream in report["streams"]:
        assert report["tracks"][stream["track"]]["frames"] == counts[stream["pid"]]
    assert report["problems"] == []


def test_human_report_says_what_is_decoded_and_what_is_carried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_probe(str(FIXTURES / "mpeg2_mp2.ts")) == 0
    out = capsys.readouterr().out
    assert "program 1 (PMT PID 0x1000)" in out
    assert "PID 0x100  type 0x02  mpeg2video -    opaque   0.mpeg2video" in out
    assert "PID 0x101  type 0x03  mpa        eng  decoded  1.mp2  [ISO 639 language eng]" in out
    assert "problems: none" in out
