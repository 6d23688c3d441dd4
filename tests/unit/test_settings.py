"""Configuration loading: a bad file is refused with one message naming the file, the key and the
problem (``<file>: <key>: <problem>``), and ``mailbridge check-config`` turns it into exit code 2;
the shipped example configuration is valid and documents every key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from mailbridge.cli import EXIT_CONFIG, cli
from mailbridge.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "mailbridge.example.toml"
EXAMPLE_PASSWORD_ENV = "MAILBRIDGE_MAIL_PASSWORD"
PASSWORD_ENV = "MB_TEST_SETTINGS_PASSWORD"
ENV = {PASSWORD_ENV: "not-a-real-password"}

VALID = f"""\
var_dir = "var"

[[accounts]]
name = "support"
host = "imap.vendor.example"
port = 993
tls = "implicit"
user = "support@vendor.example"
password_env = "{PASSWORD_ENV}"

[[queues]]
name = "software"
addresses = ["software-support@vendor.example"]
language = "en"
account = "support"

[[queues]]
name = "machines"
addresses = ["service@vendor.example"]
language = "de"
account = "support"

[smtp]
host = "smtp.vendor.example"
port = 587
tls = "starttls"
"""


def _write(tmp_path: Path, text: str, name: str = "mailbridge.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _variant(old: str, new: str, base: str = VALID) -> str:
    """``base`` with its one occurrence of ``old`` replaced by ``new``."""
    assert base.count(old) == 1, f"{old!r} must occur once in the base config"
    return base.replace(old, new)


def _error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(path, ENV if environ is None else environ)
    return str(exc.value)


# -- the valid configuration --------------------------------------------------------------------


def test_valid_config_loads_with_defaults(tmp_path):
    """A minimal valid file loads; the password comes from the named variable; defaults apply."""
    s = load_settings(_write(tmp_path, VALID), ENV)
    assert isinstance(s, Settings)
    acc = s.accounts[0]
    assert acc.password is not None and acc.password.get_secret_value() == "not-a-real-password"
    assert "not-a-real-password" not in repr(s)  # SecretStr: never shown in reprs or logs
    assert (acc.folder, acc.processed_folder, acc.quarantine_folder) == ("INBOX", "Processed", "Quarantine")
    assert s.queue_for_address("Service@Vendor.example").name == "machines"
    assert s.default_queue_for("support").name == "software"
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("var/mailbridge.db")
    assert s.case_numbers.fmt.format(s.case_numbers.first_serial) == "C1000002"


def test_password_from_file(tmp_path):
    """password_file is read (whitespace stripped) instead of an environment variable."""
    secret = _write(tmp_path, "from-a-file\n", "imap.pw")
    text = _variant(f'password_env = "{PASSWORD_ENV}"', f'password_file = "{secret}"')
    s = load_settings(_write(tmp_path, text), {})
    assert s.accounts[0].password.get_secret_value() == "from-a-file"


# -- bad files: each names the file, the key and the problem -------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert _error(path) == f"{path}: file not found"


def test_invalid_toml(tmp_path):
    path = _write(tmp_path, _variant('name = "support"', 'name = "support'))
    msg = _error(path)
    assert msg.startswith(f"{path}: not valid TOML: ")
    assert "line 4" in msg  # where the problem is


def test_unknown_key_is_a_typo(tmp_path):
    path = _write(tmp_path, _variant("port = 993\n", "port = 993\npoll_intervall = 10\n"))
    assert _error(path) == f"{path}: accounts[0].poll_intervall: unknown key (a typo?)"


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, _variant('var_dir = "var"', 'var_directory = "var"'))
    assert _error(path) == f"{path}: var_directory: unknown key (a typo?)"


def test_unknown_table(tmp_path):
    path = _write(tmp_path, VALID + "\n[outbx]\ninterval = 5\n")
    assert _error(path) == f"{path}: outbx: unknown key (a typo?)"


def test_wrong_type(tmp_path):
    path = _write(tmp_path, _variant("port = 993", 'port = "imaps"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: accounts[0].port: ")
    assert "integer" in msg


def test_wrong_type_list(tmp_path):
    path = _write(tmp_path, _variant('addresses = ["service@vendor.example"]', 'addresses = "service@vendor.example"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: queues[1].addresses: ")
    assert "list" in msg


def test_port_out_of_range(tmp_path):
    path = _write(tmp_path, _variant("port = 587", "port = 70000"))
    msg = _error(path)
    assert msg.startswith(f"{path}: smtp.port: ")
    assert "65536" in msg


@pytest.mark.parametrize("port", [0, -1])
def test_port_not_positive(tmp_path, port):
    path = _write(tmp_path, _variant("port = 993", f"port = {port}"))
    assert _error(path).startswith(f"{path}: accounts[0].port: ")


def test_plaintext_to_a_remote_host_is_refused(tmp_path):
    """tls = "none" sends the password in clear text: only a loopback host may be reached that way.
    The message names the key (accounts[0].tls), as settings.py documents."""
    path = _write(tmp_path, _variant('tls = "implicit"', 'tls = "none"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: accounts[0].tls: "), msg
    assert "loopback" in msg


def test_plaintext_smtp_to_a_remote_host_is_refused(tmp_path):
    path = _write(tmp_path, _variant('tls = "starttls"', 'tls = "none"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: smtp.tls: "), msg
    assert "loopback" in msg


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_plaintext_to_loopback_is_allowed(tmp_path, host):
    text = _variant('host = "imap.vendor.example"', f'host = "{host}"')
    text = _variant('tls = "implicit"', 'tls = "none"', text)
    assert load_settings(_write(tmp_path, text), ENV).accounts[0].tls == "none"


def test_tls_mode_must_be_known(tmp_path):
    path = _write(tmp_path, _variant('tls = "implicit"', 'tls = "ssl"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: accounts[0].tls: ")
    assert "implicit" in msg and "starttls" in msg


def test_password_env_unset(tmp_path):
    path = _write(tmp_path, VALID)
    assert _error(path, {}) == f"{path}: accounts[0].password_env: environment variable {PASSWORD_ENV} is not set"


def test_password_in_the_file_is_refused(tmp_path):
    path = _write(tmp_path, _variant(f'password_env = "{PASSWORD_ENV}"', 'password = "hunter2"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: accounts[0].password: ")
    assert "password_env" in msg and "password_file" in msg
    assert "hunter2" not in msg


def test_smtp_password_in_the_file_is_refused(tmp_path):
    path = _write(tmp_path, _variant('tls = "starttls"\n', 'tls = "starttls"\nuser = "x"\npassword = "hunter2"\n'))
    msg = _error(path)
    assert msg.startswith(f"{path}: smtp.password: ")
    assert "hunter2" not in msg


def test_account_without_any_password(tmp_path):
    path = _write(tmp_path, _variant(f'password_env = "{PASSWORD_ENV}"\n', ""))
    assert _error(path) == f"{path}: accounts[0]: set password_env or password_file"


def test_password_env_and_file_together(tmp_path):
    secret = _write(tmp_path, "pw", "imap.pw")
    path = _write(
        tmp_path,
        _variant(f'password_env = "{PASSWORD_ENV}"', f'password_env = "{PASSWORD_ENV}"\npassword_file = "{secret}"'),
    )
    assert _error(path) == f"{path}: accounts[0]: give password_env or password_file, not both"


def test_password_file_unreadable(tmp_path):
    missing = tmp_path / "missing.pw"
    path = _write(tmp_path, _variant(f'password_env = "{PASSWORD_ENV}"', f'password_file = "{missing}"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: accounts[0].password_file: cannot read {missing}")


def test_queue_references_unknown_account(tmp_path):
    text = VALID.replace('account = "support"', 'account = "suport"', 1)
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}: queues[0].account: no account named 'suport'"


def test_duplicate_support_address_across_queues(tmp_path):
    path = _write(
        tmp_path,
        _variant(
            'addresses = ["service@vendor.example"]',
            'addresses = ["service@vendor.example", "SOFTWARE-support@vendor.example"]',
        ),
    )
    assert _error(path) == (
        f"{path}: queues[1].addresses: software-support@vendor.example already belongs to queue 'software'"
    )


def test_queue_language_not_in_ingest_languages(tmp_path):
    path = _write(tmp_path, _variant('language = "de"', 'language = "fr"'))
    assert _error(path) == f"{path}: queues[1].language: 'fr' is not in ingest.languages ['de', 'en']"


def test_queue_language_allowed_when_listed(tmp_path):
    text = _variant('language = "de"', 'language = "fr"') + '\n[ingest]\nlanguages = ["de", "en", "fr"]\n'
    assert load_settings(_write(tmp_path, text), ENV).queue("machines").language == "fr"


def test_not_an_address(tmp_path):
    path = _write(tmp_path, _variant('addresses = ["service@vendor.example"]', 'addresses = ["service"]'))
    msg = _error(path)
    assert msg.startswith(f"{path}: queues[1].addresses: ")
    assert "'service' is not an e-mail address" in msg


def test_default_queue_must_exist(tmp_path):
    path = _write(tmp_path, _variant("port = 993\n", 'port = 993\ndefault_queue = "hotline"\n'))
    assert _error(path) == f"{path}: accounts[0].default_queue: no queue named 'hotline'"


def test_duplicate_queue_names(tmp_path):
    path = _write(tmp_path, _variant('name = "machines"', 'name = "software"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: ")
    assert "queues" in msg and "duplicate name 'software'" in msg


def test_account_that_feeds_nothing(tmp_path):
    extra = f"""
[[accounts]]
name = "archive"
host = "imap.vendor.example"
user = "archive@vendor.example"
password_env = "{PASSWORD_ENV}"
"""
    path = _write(tmp_path, VALID + extra)
    assert _error(path) == f"{path}: accounts[1]: no queue is fed by this account and no default_queue is set"


def test_missing_required_section(tmp_path):
    path = _write(tmp_path, VALID.split("[smtp]")[0])
    msg = _error(path)
    assert msg.startswith(f"{path}: smtp: ")
    assert "required" in msg.lower()


def test_folders_must_differ(tmp_path):
    path = _write(tmp_path, _variant("port = 993\n", 'port = 993\nprocessed_folder = "INBOX"\n'))
    msg = _error(path)
    assert msg.startswith(f"{path}: accounts[0]")
    assert "three different folders" in msg


def test_first_serial_must_fit(tmp_path):
    path = _write(tmp_path, VALID + "\n[case_numbers]\ndigits = 4\nfirst_serial = 1000\n")
    msg = _error(path)
    assert msg.startswith(f"{path}: case_numbers")
    assert "does not fit in 3 digits" in msg


@pytest.mark.parametrize(
    ("line", "key"),
    [('level = "verbose"', "logging.level"), ('format = "xml"', "logging.format")],
)
def test_logging_values(tmp_path, line, key):
    path = _write(tmp_path, VALID + f"\n[logging]\n{line}\n")
    assert _error(path).startswith(f"{path}: {key}: must be ")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(VALID.replace("var", "v\xe4r", 1).encode("latin-1"))
    assert _error(path).startswith(f"{path}: not UTF-8 text")


# -- the example configuration -------------------------------------------------------------------


def test_example_config_is_valid():
    """config/mailbridge.example.toml loads once its password and notification key variables are set."""
    s = load_settings(EXAMPLE, {EXAMPLE_PASSWORD_ENV: "x"})
    assert len(s.queues) == 2
    assert {q.language for q in s.queues} == {"de", "en"}
    software = s.queue("software")
    assert software.is_agent("someone@kessler-wzm.example") and not software.is_agent("x@kunde.example")
    assert software.notify_addresses == ["software-team@kessler-wzm.example"]
    machines = s.queue("machines")
    assert machines.notify_addresses == ["anna.berger@kessler-wzm.example", "jonas.wirth@kessler-wzm.example"]
    assert s.conversations.secret is None  # a key is created under var_dir at the first start


def test_agents_and_notify_must_not_be_support_addresses(tmp_path):
    """A support address as an agent or notification recipient would mail itself: a loop."""
    own = _variant('language = "de"', 'language = "de"\nnotify = ["software-support@vendor.example"]')
    assert _error(_write(tmp_path, own)).endswith(
        "queues[1].notify: software-support@vendor.example is a support address of queue 'software' (a mail loop)"
    )
    same = _variant('language = "de"', 'language = "de"\nagents = ["service@vendor.example"]')
    assert "queues[1].agents: service@vendor.example is one of this queue's own addresses" in _error(
        _write(tmp_path, same)
    )
    bad = _variant('language = "de"', 'language = "de"\nagents = ["anna"]')
    assert "queues[1].agents" in _error(_write(tmp_path, bad)) and "'anna' is not an e-mail address" in _error(
        _write(tmp_path, bad)
    )


def test_notification_secret_comes_from_env_or_file_never_the_config(tmp_path):
    """The notification key is read from a named variable or file; written in the config it is refused."""
    inline = _write(tmp_path, VALID + '\n[conversations]\nsecret = "abc"\n')
    assert "conversations.secret: put the key in the environment" in _error(inline)
    missing = _write(tmp_path, VALID + '\n[conversations]\nsecret_env = "MB_NOPE"\n')
    assert _error(missing).endswith("conversations.secret_env: environment variable MB_NOPE is not set")
    key = tmp_path / "key"
    key.write_text("  " + "k" * 40 + " \n")
    ok = load_settings(_write(tmp_path, VALID + f'\n[conversations]\nsecret_file = "{key}"\n'), ENV)
    assert ok.conversations.secret.get_secret_value() == "k" * 40
    key.write_text("short\n")
    assert "conversations.secret: the notification key must have at least 32 characters" in _error(
        _write(tmp_path, VALID + f'\n[conversations]\nsecret_file = "{key}"\n')
    )
    bad_policy = _write(tmp_path, VALID + '\n[conversations]\nthird_party = "ignore"\n')
    assert "conversations.third_party" in _error(bad_policy)


def test_example_config_needs_its_password_variable():
    with pytest.raises(ConfigError, match=f"environment variable {EXAMPLE_PASSWORD_ENV} is not set"):
        load_settings(EXAMPLE, {})


def _fields(model: type[BaseModel], prefix: str) -> set[str]:
    out = set()
    for name, f in model.model_fields.items():
        if f.exclude:  # filled in at load time (password, source), not keys of the file
            continue
        ann = f.annotation
        inner = getattr(ann, "__args__", (ann,))
        sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is not None:
            out |= _fields(sub, f"{prefix}{name}.")
        else:
            out.add(f"{prefix}{name}")
    return out


def _documented(text: str) -> set[str]:
    """Keys present in the example, set or commented out (``# key = value``), with their table."""
    keys, table = set(), ""
    for line in text.splitlines():
        # A table may be commented out too (# [accounts.oauth2]): an alternative, documented.
        m = re.match(r"^\s*#?\s*\[\[?([a-z_.0-9]+)\]\]?\s*$", line)
        if m:
            table = m.group(1) + "."
            continue
        m = re.match(r"^\s*#?\s*([a-z_][a-z0-9_]*)\s*=\s*(\[?\{.*\}\]?)?", line)
        if m:
            inline = re.findall(r"([a-z_]+)\s*=", m.group(2) or "")
            # An inline table (first_response = { business_hours = 4 }), or an array of them
            # (per_ticket = [{ max = 10, minutes = 10 }]), documents its keys.
            keys |= {f"{table}{m.group(1)}.{inner}" for inner in inline} or {table + m.group(1)}
    return keys


def test_example_config_documents_every_key():
    """Every key of the settings model appears in the example (set, or commented out when it is an
    alternative such as password_file); nothing in it is unknown."""
    model = _fields(Settings, "")
    documented = _documented(EXAMPLE.read_text(encoding="utf-8"))
    # Entries of a free-form table (calendars.hours.mon) are values, not keys of the model.
    documented = {next((leaf for leaf in model if k.startswith(leaf + ".")), k) for k in documented}
    assert model - documented == set()
    assert documented - model == set()
    # The models this walk reached are all the sections there are.
    assert {k.split(".")[0] for k in model} >= {
        "var_dir",
        "database",
        "case_numbers",
        "accounts",
        "queues",
        "smtp",
        "outbox",
        "ingest",
        "logging",
    }


# -- the command ---------------------------------------------------------------------------------


def test_check_config_bad_file_exits_2_with_one_line(tmp_path):
    """`mailbridge check-config` on a bad file: exit 2 and one line on stderr, nothing on stdout."""
    path = _write(tmp_path, _variant("port = 587", "port = 70000"))
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"], env=ENV)
    assert result.exit_code == EXIT_CONFIG == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"mailbridge: configuration error: {path}: smtp.port: ")


def test_check_config_missing_password_variable(tmp_path):
    path = _write(tmp_path, VALID)
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"], env={PASSWORD_ENV: None})
    assert result.exit_code == 2
    assert result.stderr == (
        f"mailbridge: configuration error: {path}: accounts[0].password_env: "
        f"environment variable {PASSWORD_ENV} is not set\n"
    )


def test_check_config_reads_mailbridge_config_variable(tmp_path):
    path = _write(tmp_path, VALID)
    result = CliRunner().invoke(cli, ["check-config"], env={**ENV, "MAILBRIDGE_CONFIG": str(path)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"{path}: OK"
    assert "queue machines: service@vendor.example [de] from account support" in result.stdout


def test_check_config_example_ok():
    result = CliRunner().invoke(cli, ["--config", str(EXAMPLE), "check-config"], env={EXAMPLE_PASSWORD_ENV: "x"})
    assert result.exit_code == 0, result.output
    assert "smtp: smtp.office365.com:587 (starttls)" in result.stdout


def test_check_config_as_a_process(tmp_path):
    """The installed entry point behaves the same: exit 2, one line naming file, key, problem."""
    path = tmp_path / "missing.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "mailbridge", "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"mailbridge: configuration error: {path}: file not found\n"


def test_smtp_user_needs_a_password(tmp_path):
    """An SMTP user without password_env/password_file is refused, not silently sent without AUTH."""
    path = _write(tmp_path, _variant('tls = "starttls"', 'tls = "starttls"\nuser = "relay"'))
    msg = _error(path)
    assert msg.startswith(f"{path}: smtp: "), msg
    assert "password_env or password_file" in msg


# -- SLA: escalations, organisations, digests ------------------------------------------------------

SCHEME = """
[[calendars]]
name = "by"
country = "DE"
subdivision = "BY"
hours = { mon = ["08:00-17:00"] }

[[severity_schemes]]
name = "s"
default = "1"
[[severity_schemes.levels]]
key = "1"
label_de = "Eins"
label_en = "One"
first_response = { business_hours = 4 }
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "reescalate_every = { calendar_hours = 0.1 }\n",
            "severity_schemes[0].levels[0].reescalate_every: a cadence shorter than a quarter of an hour",
        ),
        (
            'stages = [{ at = 50 }, { at = 50, to = "agents" }]\n',
            "severity_schemes[0].levels[0].stages: two stages at the same percentage",
        ),
        ('stages = [{ at = 100, to = "boss" }]\n', "'boss' is not an e-mail address"),
    ],
)
def test_bad_escalation_settings_name_the_key(tmp_path, extra, expected):
    text = VALID + SCHEME + extra
    assert expected in _error(_write(tmp_path, text))


def test_organisations_and_digests_are_checked_against_the_rest(tmp_path):
    org = '\n[[organisations]]\nname = "Kunde"\ndomains = ["kunde.example"]\ncalendar = "nrw"\n'
    assert "organisations[0].calendar: no [[calendars]] entry named 'nrw'" in _error(
        _write(tmp_path, VALID + SCHEME + org)
    )
    twice = '\n[[organisations]]\nname = "A"\ndomains = ["kunde.example"]\n' * 1 + (
        '\n[[organisations]]\nname = "B"\ndomains = ["kunde.example"]\n'
    )
    assert "kunde.example already belongs to 'A'" in _error(_write(tmp_path, VALID + twice))
    digest = '\n[[digests]]\nname = "d"\nrecipients = ["boss@vendor.example"]\ncron = "0 8 * *"\n'
    assert "digests[0].cron" in _error(_write(tmp_path, VALID + digest))
    digest = '\n[[digests]]\nname = "d"\nrecipients = ["boss@vendor.example"]\nqueues = ["nope"]\n'
    assert "digests[0].queues: no queue named 'nope'" in _error(_write(tmp_path, VALID + digest))


def test_an_organisation_is_found_by_address_first_then_by_domain_and_parent_domain(tmp_path):
    orgs = (
        '\n[[organisations]]\nname = "Kunde"\ndomains = ["kunde.example"]\ncontract = "Wartungsvertrag"\n'
        '\n[[organisations]]\nname = "Freelancer"\naddresses = ["max@gmail.com"]\n'
    )
    s = load_settings(_write(tmp_path, VALID + orgs), ENV)
    assert s.organisation_for("A@Werk.Kunde.example").name == "Kunde"
    assert s.organisation_for("max@gmail.com").name == "Freelancer"
    assert s.organisation_for("other@gmail.com") is None
    assert s.organisation_for("x@notkunde.example") is None


# -- scheduled reports ----------------------------------------------------------------------------

REPORT = '\n[[reports]]\nname = "r"\nreport = "open-items"\nrecipients = ["lead@vendor.example"]\n'
CALENDAR = '\n[[calendars]]\nname = "nrw"\ntimezone = "Europe/Berlin"\nhours = { mon = ["08:00-17:00"] }\n'


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('schedule = "monday 8"', "reports[0].schedule: 'monday 8': '8' is not a time of day (HH:MM)"),
        ('schedule = "someday 08:00"', "reports[0].schedule: 'someday 08:00': 'someday' is not a day"),
        ('schedule = "every other week 08:00"', "reports[0].schedule: 'every other week 08:00': not a schedule"),
        ('schedule = "daily 24:00"', "reports[0].schedule: 'daily 24:00': '24:00' is not a time of day"),
        ('schedule = "daily 08:00"\ntimezone = "Mars/Base"', "reports[0].timezone: 'Mars/Base' is not a time zone"),
        (
            'schedule = "daily 08:00"\ntimezone = "Europe/Berlin"\ncalendar = "nrw"',
            "reports[0].timezone: give calendar or timezone, not both",
        ),
        ('schedule = "daily 08:00"\ncalendar = "konz"', "reports[0].calendar: no [[calendars]] entry named 'konz'"),
        ('schedule = "daily 08:00"\nformat = "pdf"', "reports[0].format: 'pdf' is not a format"),
        ('schedule = "daily 08:00"\nlanguage = "fr"', "reports[0].language: 'fr' is not in ingest.languages"),
        ("", "reports[0].schedule: Field required"),
    ],
)
def test_a_bad_scheduled_report_names_the_file_the_key_and_the_problem(tmp_path, extra, expected):
    path = _write(tmp_path, VALID + CALENDAR + REPORT + extra + "\n")
    message = _error(path)
    assert message.startswith(f"{path}: ") and expected in message, message


def test_a_scheduled_report_counts_in_its_calendars_zone(tmp_path):
    text = (
        VALID
        + CALENDAR.replace("Europe/Berlin", "America/New_York")
        + REPORT
        + 'schedule = "weekdays 07:30"\ncalendar = "nrw"\n'
    )
    s = load_settings(_write(tmp_path, text), environ=ENV)
    sched = s.report_schedule(s.reports[0])
    assert (sched.timezone, sched.day_of_week, sched.hour, sched.minute) == ("America/New_York", "mon-fri", 7, 30)
