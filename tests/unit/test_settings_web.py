"""``[web]``, ``[notifications]`` and ``[smtp] max_message_bytes``: defaults, and a bad value names the
file, the key and the problem; the link key never shows in settings output."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mailbridge.cli import cli
from mailbridge.settings import ConfigError, load_settings
from tests.unit.test_settings import ENV, VALID, _write

KEY = "0123456789abcdef0123456789abcdef-web"


def test_defaults_no_links_10_mb_budget_postfix_limit(tmp_path):
    s = load_settings(_write(tmp_path, VALID), ENV)
    assert s.web.base_url is None and s.web.secret is None and s.web.address == ("127.0.0.1", 8080)
    assert s.web.link_days == 30
    assert s.notifications.attach_max_bytes == 10 * 1024 * 1024
    assert s.smtp.max_message_bytes == 10_240_000


def test_web_with_key_from_the_environment_or_a_file(tmp_path):
    env = {**ENV, "MB_WEB_KEY": KEY}
    web = '\n[web]\nbase_url = "https://support.example/desk"\nsecret_env = "MB_WEB_KEY"\nlisten = "[::1]:8081"\n'
    s = load_settings(_write(tmp_path, VALID + web), env)
    assert s.web.base_url == "https://support.example/desk/"  # links are made below it
    assert s.web.secret.get_secret_value() == KEY and s.web.address == ("::1", 8081)
    assert KEY not in repr(s) and KEY not in s.model_dump_json()
    keyfile = tmp_path / "web.key"
    keyfile.write_text(KEY + "\n", encoding="utf-8")
    web = f'\n[web]\nbase_url = "https://support.example/"\nsecret_file = "{keyfile}"\n'
    assert load_settings(_write(tmp_path, VALID + web), ENV).web.secret.get_secret_value() == KEY


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ('[web]\nbase_url = "https://support.example/"\n', "web.secret_env", "set secret_env or secret_file"),
        ('[web]\nbase_url = "ftp://support.example/"\nsecret_env = "MB_WEB_KEY"\n', "web.base_url", "http(s) URL"),
        ('[web]\nbase_url = "https://x.example/"\nsecret_env = "MB_SHORT"\n', "web.secret", "at least 32"),
        ('[web]\nsecret = "x"\n', "web.secret", "in the environment (secret_env) or a file"),
        ('[web]\nsecret_env = "MB_NOT_SET"\n', "web.secret_env", "MB_NOT_SET is not set"),
        ('[web]\nlisten = "8080"\n', "web.listen", "is not host:port"),
        ("[web]\nlink_days = 0\n", "web.link_days", "greater than 0"),
        ("[notifications]\nattach_max_bytes = -1\n", "notifications.attach_max_bytes", "greater than or equal"),
        ("[notifications]\nattach_max = 5\n", "notifications.attach_max", "unknown key"),
    ],
)
def test_a_bad_value_names_file_key_and_problem(tmp_path, section, key, problem):
    path = _write(tmp_path, VALID + "\n" + section)
    with pytest.raises(ConfigError) as exc:
        load_settings(path, {**ENV, "MB_WEB_KEY": KEY, "MB_SHORT": "short"})
    message = str(exc.value)
    assert message.startswith(f"{path}: {key}"), message
    assert problem in message, message


def test_check_config_names_the_web_app_without_its_key(tmp_path, monkeypatch):
    for k, v in {**ENV, "MB_WEB_KEY": KEY}.items():
        monkeypatch.setenv(k, v)
    web = '\n[web]\nbase_url = "https://support.example/"\nsecret_env = "MB_WEB_KEY"\n'
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, VALID + web)), "check-config"])
    assert result.exit_code == 0, result.output
    assert "web: 127.0.0.1:8080, download links at https://support.example/" in result.output
    assert KEY not in result.output
