"""The ledger and webhook settings of `moqsrt serve`: defaults, flags, files, clear errors, and
a secret that never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config import ConfigError, check_webhook, load_config


def test_the_ledger_is_on_in_var_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    config = load_config()
    assert config.ledger == Path("var") / "ledger.sqlite3"
    assert config.ledger_interval_ms == 1000
    assert config.webhook_url is None
    assert load_config(None, {"ledger": "off"}).ledger is None
    file = tmp_path / "moqsrt.toml"
    file.write_text('ledger = "/data/usage.db"\nledger_interval_ms = 250\n')
    config = load_config(file)
    assert (config.ledger, config.ledger_interval_ms) == (Path("/data/usage.db"), 250)


def test_serve_flags_reach_the_ledger_and_webhook_settings(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-0123\n")
    args = build_parser().parse_args(
        [
            "serve",
            "--ledger",
            str(tmp_path / "l.db"),
            "--ledger-interval",
            "500",
            "--webhook-url",
            "https://billing.example/hook",
            "--webhook-secret-file",
            str(secret),
        ]
    )
    keys = ("ledger", "ledger_interval_ms", "webhook_url", "webhook_secret_file")
    config = load_config(None, {k: getattr(args, k) for k in keys})
    assert config.ledger == tmp_path / "l.db"
    assert config.ledger_interval_ms == 500
    assert config.webhook_secret == "from-a-file-0123"
    assert "from-a-file-0123" not in repr(config)


def test_a_webhook_needs_a_secret_and_an_http_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOQSRT_WEBHOOK_SECRET", raising=False)
    unsigned = load_config(None, {"webhook_url": "https://billing.example/hook"})
    with pytest.raises(ConfigError, match="needs a secret") as info:
        check_webhook(unsigned)  # what `serve` runs before it binds anything
    assert info.value.key == "webhook_secret"
    check_webhook(load_config(None, {"webhook_url": "https://b.example/", "webhook_secret": "k"}))
    with pytest.raises(ConfigError, match="http") as info:
        load_config(None, {"webhook_url": "ftp://x/?token=hush", "webhook_secret": "k"})
    assert "hush" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(
            None,
            {"webhook_url": "https://b.example/", "webhook_secret_file": str(tmp_path / "no")},
        )
    monkeypatch.setenv("MOQSRT_WEBHOOK_SECRET", "from-the-environment")
    config = load_config(None, {"webhook_url": "https://b.example/"})
    assert config.webhook_secret == "from-the-environment"


def test_a_relative_secret_file_in_toml_is_relative_to_that_file(tmp_path: Path) -> None:
    (tmp_path / "hook.key").write_text("  secret-from-beside-the-toml \n")
    toml = tmp_path / "moqsrt.toml"
    toml.write_text('webhook_url = "http://127.0.0.1:1/h"\nwebhook_secret_file = "hook.key"\n')
    assert load_config(toml, environ={}).webhook_secret == "secret-from-beside-the-toml"


def test_a_bad_interval_names_its_key() -> None:
    with pytest.raises(ConfigError, match="must be positive") as info:
        load_config(None, {"ledger_interval_ms": "0"})
    assert info.value.key == "ledger_interval_ms"


def test_the_default_ledger_lives_in_var_dir_unless_named() -> None:
    assert load_config(None, {"var_dir": "/srv/moqsrt"}).ledger == Path(
        "/srv/moqsrt/ledger.sqlite3"
    )
    named = load_config(None, {"var_dir": "/srv/moqsrt", "ledger": "/data/u.db"})
    assert named.ledger == Path("/data/u.db")
    assert load_config(None, {"var_dir": "/srv/moqsrt", "ledger": "off"}).ledger is None
