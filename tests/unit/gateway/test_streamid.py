"""Stream id parsing: the three forms callers send, prefixes, and every refusal (1400)."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.srt.lib import MAX_STREAM_ID_CHARS
from gateway.streamid import (
    REDACTED,
    StreamIdError,
    StreamRequest,
    normalize_prefix,
    parse_stream_id,
    redact_stream_id,
)


def test_access_form_publish_names_resource_and_mode() -> None:
    req = parse_stream_id("#!::r=live/cam1,m=publish")
    assert req.mode == "publish"
    assert req.is_publish
    assert req.resource == "live/cam1"
    assert req.path == "live/cam1"
    assert req.form == "access"
    assert req.raw == "#!::r=live/cam1,m=publish"


def test_access_form_request_is_a_subscribe() -> None:
    req = parse_stream_id("#!::r=live/cam1,m=request")
    assert req.mode == "request"
    assert not req.is_publish


def test_access_form_without_mode_publishes_by_default() -> None:
    assert parse_stream_id("#!::r=cam0").mode == "publish"


def test_access_form_default_mode_is_configurable() -> None:
    assert parse_stream_id("#!::r=cam0", default_mode="request").mode == "request"


def test_access_form_mode_is_case_insensitive() -> None:
    assert parse_stream_id("#!::r=cam0,m=REQUEST").mode == "request"


def test_access_form_reads_user_session_host_and_keeps_every_key() -> None:
    req = parse_stream_id("#!::u=alice,r=live/cam1,h=example.com,s=abc123,t=stream,m=publish")
    assert req.user == "alice"
    assert req.session == "abc123"
    assert req.host == "example.com"
    assert req.params["t"] == "stream"
    assert req.resource == "live/cam1"


def test_access_form_ignores_vendor_and_unknown_keys() -> None:
    req = parse_stream_id("#!::r=live/bmd,m=publish,bmd_uuid=1234-5678,bmd_name=Studio,x=y")
    assert req.resource == "live/bmd"
    assert req.mode == "publish"
    assert req.params["bmd_uuid"] == "1234-5678"
    assert req.params["x"] == "y"


def test_access_form_splits_values_at_the_first_equals_sign() -> None:
    req = parse_stream_id("#!::r=live/cam1,secret=a=b==,m=publish")
    assert req.params["secret"] == "a=b=="


def test_access_form_last_duplicate_key_wins() -> None:
    assert parse_stream_id("#!::r=first,r=second").resource == "second"


def test_access_form_tolerates_whitespace_around_entries() -> None:
    req = parse_stream_id("  #!:: r=live/cam1 , m=request  ")
    assert req.resource == "live/cam1"
    assert req.mode == "request"


def test_plain_obs_form_is_a_publish_of_the_raw_resource() -> None:
    req = parse_stream_id("app/key")
    assert req.mode == "publish"
    assert req.resource == "app/key"
    assert req.form == "plain"


def test_plain_form_tolerates_one_leading_and_trailing_slash() -> None:
    assert parse_stream_id("/live/cam1/").resource == "live/cam1"


def test_mediamtx_publish_with_credentials() -> None:
    req = parse_stream_id("publish:live/cam1:alice:s3cret")
    assert req.mode == "publish"
    assert req.resource == "live/cam1"
    assert req.user == "alice"
    assert req.password == "s3cret"
    assert req.form == "mediamtx"


def test_mediamtx_read_is_a_request() -> None:
    req = parse_stream_id("read:live/cam1")
    assert req.mode == "request"
    assert req.resource == "live/cam1"
    assert req.user == ""


def test_mediamtx_query_lands_in_params() -> None:
    req = parse_stream_id("read:live/cam1:token=xyz&a=1")
    assert req.params == {"token": "xyz", "a": "1"}
    req = parse_stream_id("publish:live/cam1:bob:pw:key=v")
    assert (req.user, req.password, req.params["key"]) == ("bob", "pw", "v")


def test_percent_encoded_access_id_is_decoded() -> None:
    req = parse_stream_id("%23%21%3A%3Ar%3Dlive%2Fcam1%2Cm%3Drequest")
    assert req.resource == "live/cam1"
    assert req.mode == "request"


@pytest.mark.parametrize(
    ("prefix", "resource", "path"),
    [
        ("live", "cam1", "live/cam1"),
        ("live/", "cam1", "live/cam1"),
        ("/live/", "/cam1", "live/cam1"),
        ("tenants/acme", "a/b", "tenants/acme/a/b"),
        ("", "cam1", "cam1"),
    ],
)
def test_prefix_is_joined_on_a_segment_boundary(prefix: str, resource: str, path: str) -> None:
    req = parse_stream_id(f"#!::r={resource},m=publish", prefix)
    assert req.path == path
    assert req.resource == resource.strip("/")


def test_prefix_with_dot_segments_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="prefix"):
        normalize_prefix("live/../etc")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "#!::",
        "#!::u=bob",
        "#!::r=",
        "#!::r=live/cam1,broken",
        "#!::r=live/cam1,=x",
        "#!::r=live/cam1,m=bidirectional",
        "#!::r=live/cam1,m=play",
        "#!::r=../escape",
        "#!::r=live/../../etc",
        "#!::r=live/./cam",
        "#!::r=live//cam",
        "#!::r=//",
        "#!::r=live/ cam /x",
        "../other",
        "live/..",
        "a//b",
        "publish:",
        "publish::alice:pw",
        "read:live/cam1::pw",
        "publish:a:b:c:d:e",
        "live/cam\x00",
        "live/cam\n1",
        "#!::r=live/cam1\x7f",
        "x" * (MAX_STREAM_ID_CHARS + 1),
        "%23%21%3A%3Ar%3D..%2Fx",
    ],
)
def test_bad_stream_ids_are_refused_with_code_1400(raw: str) -> None:
    with pytest.raises(StreamIdError) as info:
        parse_stream_id(raw, "live")
    assert info.value.code == 1400
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, GatewayError)


def test_missing_stream_id_is_refused_with_code_1400() -> None:
    with pytest.raises(StreamIdError) as info:
        parse_stream_id(None)
    assert info.value.code == 1400
    assert info.value.raw is None


def test_longest_allowed_stream_id_parses() -> None:
    raw = "#!::m=publish,r=" + "a" * (MAX_STREAM_ID_CHARS - len("#!::m=publish,r="))
    assert len(raw) == MAX_STREAM_ID_CHARS
    assert parse_stream_id(raw).resource.startswith("aaa")


def test_error_keeps_a_bounded_copy_of_the_raw_id() -> None:
    with pytest.raises(StreamIdError) as info:
        parse_stream_id("y" * 10_000)
    assert info.value.raw is not None
    assert len(info.value.raw) == MAX_STREAM_ID_CHARS + 1


_SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs"), blacklist_characters="/,:="),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and not s.startswith("%"))


@given(prefix=st.lists(_SEGMENT, max_size=3), resource=st.lists(_SEGMENT, min_size=1, max_size=4))
def test_every_parsed_path_stays_under_the_prefix(prefix: list[str], resource: list[str]) -> None:
    prefix_text = "/".join(prefix)
    req = parse_stream_id("#!::r=" + "/".join(resource) + ",m=request", prefix_text)
    assert req.path.split("/")[: len(prefix)] == prefix
    assert req.path == "/".join([*prefix, *resource])


@given(raw=st.text(max_size=600))
def test_any_text_parses_or_raises_stream_id_error(raw: str) -> None:
    outcome: StreamRequest | StreamIdError
    try:
        outcome = parse_stream_id(raw, "live")
    except StreamIdError as exc:
        outcome = exc
    if isinstance(outcome, StreamIdError):
        assert outcome.code == 1400
    else:
        segments = outcome.path.split("/")
        assert segments[0] == "live"
        assert all(s and s not in (".", "..") for s in segments)


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        ("#!::r=live/a,m=publish,u=bob", "#!::r=live/a,m=publish,u=bob"),
        ("#!::r=live/a,u=bob,s=TOKEN123", "#!::r=live/a,u=bob,s=***"),
        (
            "#!::r=a,password=P1,Pass=P2,pwd=P3,api_token=P4,streamKey=P5,x_auth=P6,sig=P7",
            "#!::r=a,password=***,Pass=***,pwd=***,api_token=***,streamKey=***,x_auth=***,sig=***",
        ),
        ("#!::r=a,client_secret=P1,creds=P2,session_id=P3,jwt=P4", None),
        ("#!::r=a,bmd_uuid=1234,bmd_name=Studio,t=stream,h=host", None),
        ("#!::r=a,s=abc,def", "#!::r=a,s=***,***"),
        ("#!::r=a, s = abc ", "#!::r=a, s =***"),
        ("publish:live/a:alice:PW123", "publish:live/a:alice:***"),
        ("publish:live/a:alice:PW123:token=T1&x=1", "publish:live/a:alice:***:token=***&x=1"),
        ("read:live/a:token=T1&x=1", "read:live/a:token=***&x=1"),
        ("read:live/a:T1", "read:live/a:***"),
        ("read:live/a:s=AB:CD&x=y", "read:live/a:s=***:***"),
        ("publish:live/a:alice:PW:extra:more", "publish:live/a:alice:***"),
        ("%23%21%3A%3Ar%3Dlive%2Fa%2Cs%3DTOKEN123", "#!::r=live/a,s=***"),
        ("live/cam1", "live/cam1"),
        ("", ""),
        (None, ""),
    ],
)
def test_redaction_keeps_keys_resource_and_user_and_hides_secret_values(
    raw: str | None, redacted: str | None
) -> None:
    out = redact_stream_id(raw)
    if redacted is None:  # the expectation: every secret-looking value hidden, others kept
        expected = ",".join(
            f"{item.partition('=')[0]}={REDACTED}"
            if item.partition("=")[0] in {"client_secret", "creds", "session_id", "jwt"}
            else item
            for item in (raw or "").split(",")
        )
        assert out == expected
    else:
        assert out == redacted


def test_redaction_of_an_oversized_id_is_bounded_and_still_hides_secrets() -> None:
    raw = "#!::r=a,s=SECRETVALUE," + "x=" + "y" * 5000
    out = redact_stream_id(raw)
    assert "SECRETVALUE" not in out
    assert len(out) <= MAX_STREAM_ID_CHARS + 1


def test_stream_request_repr_shows_the_redacted_id_only() -> None:
    req = parse_stream_id("publish:live/a:alice:PW-SECRET-1:token=TOKEN-SECRET-2")
    assert req.password == "PW-SECRET-1"  # the hook still gets everything
    assert req.params["token"] == "TOKEN-SECRET-2"
    text = repr(req) + str(req)
    assert "PW-SECRET-1" not in text
    assert "TOKEN-SECRET-2" not in text
    assert "publish:live/a:alice:***:token=***" in text
    session = parse_stream_id("#!::r=a,s=SESSION-SECRET")
    assert session.session == "SESSION-SECRET"
    assert "SESSION-SECRET" not in repr(session)
    assert session.redacted == "#!::r=a,s=***"


@pytest.mark.parametrize(
    "raw",
    ["#!::r=a,s=ab,CD-SECRET", "publish:a:b:c:d:CD-SECRET", "#!::CD-SECRET,r=a"],
)
def test_refusal_messages_do_not_echo_secrets(raw: str) -> None:
    with pytest.raises(StreamIdError) as info:
        parse_stream_id(raw)
    assert "CD-SECRET" not in str(info.value)
    assert "CD-SECRET" not in repr(info.value)


_SECRET = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789,:&", min_size=1, max_size=24)
_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_SECRET_KEYS = st.sampled_from(["s", "password", "pass", "token", "apikey", "secret", "auth"])


@given(
    resource=_NAME,
    user=_NAME,
    key=_SECRET_KEYS,
    secret=_SECRET,
    encode=st.booleans(),
    form=st.sampled_from(["access", "mediamtx", "query"]),
)
def test_no_character_of_a_secret_survives_redaction(
    resource: str, user: str, key: str, secret: str, encode: bool, form: str
) -> None:
    # Secrets are upper case, everything else lower case: any upper-case letter or digit of
    # the secret's alphabet left in the output would be part of a secret.
    if form == "access":
        raw = f"#!::r={resource},u={user},{key}={secret},m=publish"
    elif form == "mediamtx":
        raw = f"publish:{resource}:{user}:{secret}"
    else:
        raw = f"read:{resource}:{key}={secret}&x=y"
    if encode and form == "access":
        raw = urllib.parse.quote(raw, safe="")
    out = redact_stream_id(raw)
    assert not any(c.isupper() for c in out), (raw, out)
    assert resource in out


@given(raw=st.text(max_size=700))
def test_redaction_takes_any_text_and_stays_bounded(raw: str) -> None:
    assert len(redact_stream_id(raw)) <= 3 * (MAX_STREAM_ID_CHARS + 1)
