"""`moqsrt serve` configuration: defaults, TOML file, flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig, load_config, parse_address


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
        ("latencyms", "100", "unknown setting"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {key: value})
    assert info.value.key == key
    assert fragment in str(info.value)


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
