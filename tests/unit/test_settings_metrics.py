"""``[metrics] listen``: off unless set; a value that is not host:port is refused naming the file, the
key and the problem, before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mailbridge.cli import EXIT_CONFIG, cli
from mailbridge.settings import ConfigError, load_settings
from tests.unit.test_settings import ENV, VALID, _write


def _with_listen(tmp_path, value: str):
    return _write(tmp_path, VALID + f'\n[metrics]\nlisten = "{value}"\n')


def test_metrics_are_off_unless_listen_is_set(tmp_path):
    s = load_settings(_write(tmp_path, VALID), ENV)
    assert s.metrics.listen is None and s.metrics.address is None


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("[::1]:9108", ("::1", 9108)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),  # noqa: S104 - a container publishes it
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_listen_takes_host_and_port(tmp_path, value, address):
    assert load_settings(_with_listen(tmp_path, value), ENV).metrics.address == address


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9108", "'9108' is not host:port (e.g. \"127.0.0.1:9108\"): give a port from 1 to 65535"),
        (":9108", "':9108' is not host:port (e.g. \"127.0.0.1:9108\")"),
        ("127.0.0.1:0", "give a port from 1 to 65535"),
        ("127.0.0.1:70000", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:metrics", "the port must be a number from 1 to 65535"),
        ("http://127.0.0.1:9108", "'http://127.0.0.1:9108' is not host:port"),
        ("127.0.0.1:9108/metrics", "'127.0.0.1:9108/metrics' is not host:port"),
        ("[::1:9108", "'[::1:9108' is not host:port"),
        ("", "'' is not host:port"),
    ],
)
def test_a_bad_listen_names_file_key_and_problem(tmp_path, value, problem):
    path = _with_listen(tmp_path, value)
    with pytest.raises(ConfigError) as exc:
        load_settings(path, ENV)
    message = str(exc.value)
    assert message.startswith(f"{path}: metrics.listen: "), message
    assert problem in message


def test_a_bad_listen_stops_run_before_it_starts(tmp_path):
    path = _with_listen(tmp_path, "127.0.0.1:99999")
    result = CliRunner().invoke(cli, ["--config", str(path), "run"], env=ENV)
    assert result.exit_code == EXIT_CONFIG
    assert "configuration error" in result.stderr and "metrics.listen" in result.stderr
