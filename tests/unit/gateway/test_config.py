"""`moqsrt serve` configuration: defaults, TOML file, flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import (
    KEYS,
    PASSPHRASE_ENV,
    ConfigError,
    GatewayConfig,
    load_config,
    parse_address,
)

SECRET = "file-secret-0123"


def test_defaults_serve_srt_on_port_9000_with_no_file_and_no_flags() -> None:
    config = load_config()
    assert config == GatewayConfig()
    assert config.srt == ("0.0.0.0", 9000)


def test_flags_override_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    file = tmp_path / "moqsrt.toml"
    file.write_text('srt = "127.0.0.1:9100"\nlatency_ms = 200\nprefix = "live"\n')
    config = load_config(file, {"latency_ms": "300", "prefix": None})
    assert config.srt == ("127.0.0.1", 9100)
    assert config.latency_ms == 300
    assert config.prefix == "live"


def test_publish_cap_is_off_by_default_and_reaches_the_server_config() -> None:
    from gateway.serve import server_config

    assert load_config().publish_cap_bps is None
    config = load_config(None, {"publish_cap_bps": "20000000"})
    assert config.publish_cap_bps == 20_000_000
    assert server_config(config).publish_cap_bps == 20_000_000
    assert load_config(None, {"publish_cap_bps": "off"}).publish_cap_bps is None


def test_peer_idle_timeout_flag_reaches_the_srt_sockets_settings() -> None:
    import argparse

    from gateway.serve import add_arguments, server_config

    assert server_config(load_config()).peer_idle_timeout_ms == 5000
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--peer-idle-timeout", "1500"])
    config = load_config(None, {"peer_idle_timeout_ms": args.peer_idle_timeout_ms})
    assert server_config(config).peer_idle_timeout_ms == 1500
    with pytest.raises(ConfigError, match="peer_idle_timeout_ms"):
        load_config(None, {"peer_idle_timeout_ms": "soon"})


def test_off_disables_a_listener() -> None:
    assert parse_address("moq", "off") is None
    assert load_config(None, {"http": "off"}).http is None


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("srt", "9000", "host:port"),
        ("srt", "host:99999", "out of range"),
        ("latency_ms", "fast", "integer"),
        ("latency_ms", "-5", "positive"),
        ("passphrase", "short", "10 to 79"),
        ("publisher_policy", "merge", "'reject' or 'takeover'"),
        ("log_format", "xml", "json"),
        ("log_level", "loud", "debug, info"),
        ("prefix", "live/../etc", "'..'"),
        ("request_timeout_s", "nan", "finite"),
        ("http_thumbnail_interval_s", "-1", "0 (off) or 1 to 86400 seconds"),
        ("http_thumbnail_interval_s", "0.5", "0 (off) or 1 to 86400 seconds"),
        ("http_thumbnail_interval_s", "inf", "0 (off) or 1 to 86400 seconds"),
        ("http_thumbnail_interval_s", "nan", "0 (off) or 1 to 86400 seconds"),
        ("http_thumbnail_interval_s", "soon", "expected a number of seconds"),
        ("node", "", "1 to 255"),
        ("srt", "bad host:9000", "not a host name"),
        ("latencyms", "100", "unknown setting"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {key: value}, environ={})
    assert info.value.key == key
    assert fragment in str(info.value)


def test_the_thumbnail_interval_defaults_to_30_s_and_0_turns_thumbnails_off(
    tmp_path: Path,
) -> None:
    assert GatewayConfig().http_thumbnail_interval_s == 60.0
    assert load_config(None, {}, environ={}).http_thumbnail_interval_s == 60.0
    for flag, seconds in (("0", 0.0), ("off", 0.0), ("5", 5.0), ("2.5", 2.5), ("86400", 86400)):
        assert load_config(None, {"http_thumbnail_interval_s": flag}).http_thumbnail_interval_s == (
            seconds
        )
    file = tmp_path / "c.toml"
    for toml, seconds in (("0", 0.0), ("45", 45.0), ("7.5", 7.5), ('"off"', 0.0)):
        file.write_text(f"http_thumbnail_interval_s = {toml}\n")
        assert load_config(file).http_thumbnail_interval_s == seconds
    file.write_text("http_thumbnail_interval_s = 60\n")  # a flag beats the file
    assert load_config(file, {"http_thumbnail_interval_s": "0"}).http_thumbnail_interval_s == 0
    for toml in ("true", "-30", '"soon"', "[30]"):
        file.write_text(f"http_thumbnail_interval_s = {toml}\n")
        with pytest.raises(ConfigError) as info:
            load_config(file)
        assert info.value.key == "http_thumbnail_interval_s"
        assert str(info.value).startswith("http_thumbnail_interval_s: ")


def test_a_broken_toml_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("srt = [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(file)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_the_readme_configuration_example_loads_as_the_defaults(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    start = readme.index("```toml\n") + len("```toml\n")
    example = tmp_path / "example.toml"
    example.write_text(readme[start : readme.index("```", start)])
    assert load_config(example) == GatewayConfig()


def test_config_repr_never_shows_the_passphrase() -> None:
    from gateway.serve import server_config

    config = load_config(None, {"passphrase": SECRET}, environ={})
    assert config.passphrase == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in repr(server_config(config))


def test_passphrase_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "srt.key"
    secret_file.write_text(SECRET + "\n")
    config = load_config(None, {"passphrase_file": str(secret_file)}, environ={})
    assert config.passphrase == SECRET


def test_passphrase_file_in_toml_is_relative_to_the_toml_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "srt.key").write_text(SECRET)
    toml = tmp_path / "conf" / "moqsrt.toml"
    toml.write_text('passphrase_file = "srt.key"\n')
    assert load_config(toml, environ={}).passphrase == SECRET


def test_passphrase_precedence_is_flag_then_environment_then_file(tmp_path: Path) -> None:
    toml = tmp_path / "moqsrt.toml"
    toml.write_text('passphrase = "from-the-file-1"\n')
    env = {PASSPHRASE_ENV: "from-the-env-12"}
    assert load_config(toml, environ={}).passphrase == "from-the-file-1"
    assert load_config(toml, environ=env).passphrase == "from-the-env-12"
    flag = {"passphrase": "from-the-flag-1"}
    assert load_config(toml, flag, environ=env).passphrase == "from-the-flag-1"
    key_file = tmp_path / "k"
    key_file.write_text("from-flag-file-1\n")
    flag_file = {"passphrase_file": str(key_file)}
    assert load_config(toml, flag_file, environ=env).passphrase == "from-flag-file-1"
    assert load_config(None, {}, environ={PASSPHRASE_ENV: ""}).passphrase is None


def test_both_passphrase_sources_at_one_level_are_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "moqsrt.toml"
    toml.write_text(f'passphrase = "{SECRET}"\npassphrase_file = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(toml, environ={})
    assert info.value.key == "passphrase_file"
    with pytest.raises(ConfigError):
        load_config(None, {"passphrase": SECRET, "passphrase_file": "x"}, environ={})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"short-one\n", "10 to 79"),
        (b"x" * 80, "10 to 79"),
        (b"two\nlines-of-secret", "10 to 79"),
        (b"\xff\xfe-not-utf8-secret", "UTF-8"),
        (b"y" * 5000, "too large"),
    ],
)
def test_a_bad_passphrase_file_names_the_key_and_the_file_never_its_content(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    key_file = tmp_path / "srt.key"
    key_file.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(None, {"passphrase_file": str(key_file)}, environ={})
    assert info.value.key == "passphrase_file"
    assert fragment in str(info.value)
    assert str(key_file) in str(info.value)
    shown = content.decode("utf-8", "replace")
    assert all(part not in str(info.value) for part in shown.split() if len(part) >= 3)


def test_a_bad_passphrase_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, environ={PASSPHRASE_ENV: "tiny-pw"})
    assert info.value.key == PASSPHRASE_ENV
    assert "tiny-pw" not in str(info.value)


# One valid value per key, as a flag would carry it and as TOML writes it.
_VALID = {
    "srt": ("127.0.0.1:9100", '"127.0.0.1:9100"'),
    "moq": ("127.0.0.1:4443", '"127.0.0.1:4443"'),
    "http": ("off", '"off"'),
    "http_token": ("http-token-0123456789", '"http-token-0123456789"'),
    "metrics_path_labels": ("on", "true"),
    "http_public_page": ("on", "true"),
    "http_thumbnail_interval_s": ("5", "5"),
    "ledger": ("usage.db", '"usage.db"'),
    "ledger_interval_ms": ("250", "250"),
    "webhook_url": ("https://billing.example/hook", '"https://billing.example/hook"'),
    "webhook_secret": (SECRET, f'"{SECRET}"'),
    "webhook_secret_file": ("KEYFILE", '"KEYFILE"'),
    "upstream": ("https://relay.example/anon", '"https://relay.example/anon"'),
    "upstream_fingerprint": ("ab" * 32, '"' + "ab" * 32 + '"'),
    "moq_cert": ("cert.pem", '"cert.pem"'),
    "moq_key": ("key.pem", '"key.pem"'),
    "var_dir": ("state", '"state"'),
    "prefix": ("tenants/acme", '"tenants/acme"'),
    "latency_ms": ("250", "250"),
    "passphrase": (SECRET, f'"{SECRET}"'),
    "passphrase_file": ("KEYFILE", '"KEYFILE"'),
    "publisher_policy": ("takeover", '"takeover"'),
    "request_timeout_s": ("2.5", "2.5"),
    "max_bitrate_bps": ("50000000", "50000000"),
    "publish_cap_bps": ("20000000", "20000000"),
    "peer_idle_timeout_ms": ("8000", "8000"),
    "node": ("gw-7", '"gw-7"'),
    "log_format": ("json", '"json"'),
    "log_level": ("debug", '"debug"'),
    "max_sessions": ("50", "50"),
    "max_peer_sessions": ("off", '"off"'),
    "max_peer_handshakes_per_s": ("2.5", "2.5"),
    "users": ("USERS.toml", '"USERS.toml"'),
    "auth_http_url": ("http://127.0.0.1:8080/auth", '"http://127.0.0.1:8080/auth"'),
    "auth_http_timeout_ms": ("500", "500"),
    "auth_cache_ms": ("0", "0"),
}


def _readme_flag_table() -> list[tuple[str, str]]:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    section = section[: section.index("\n## ", 5)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`--") and cells[1].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1].strip("`")))
    return rows


def test_every_flag_in_the_readme_table_sets_the_toml_key_it_names(tmp_path: Path) -> None:
    import argparse

    from gateway.serve import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dest_of = {opt: a.dest for a in parser._actions for opt in a.option_strings}
    rows = _readme_flag_table()
    assert len(rows) >= 15
    documented_flags = {flag for flag, _ in rows}
    assert documented_flags == set(dest_of) - {"-h", "--help", "--config"}
    assert {key for _, key in rows} == KEYS
    (tmp_path / "KEYFILE").write_text(SECRET)
    (tmp_path / "USERS.toml").write_text('[[users]]\ntoken = "t0123456"\n')
    for flag, key in rows:
        assert dest_of[flag] == key, (flag, key)
        flag_value, toml_value = _VALID[key]
        flag_value = flag_value.replace("KEYFILE", str(tmp_path / "KEYFILE"))
        flag_value = flag_value.replace("USERS.toml", str(tmp_path / "USERS.toml"))
        args = parser.parse_args([flag, flag_value])
        from_flag = load_config(None, {key: getattr(args, key)}, environ={})
        toml = tmp_path / f"{key}.toml"
        toml.write_text(f"{key} = {toml_value}\n")
        from_file = load_config(toml, environ={})
        assert from_flag == from_file, key
        assert from_flag != GatewayConfig() or key == "http", key
