"""The subtle rules of data protection, one function each: every column of the schema is classified for
the erasure; an address is found and replaced in mail bytes also where an encoding hides it; the log's
address redaction; the retention settings."""

from __future__ import annotations

import base64
import io
import json
import logging
from email.message import EmailMessage
from email.policy import SMTP

import pytest
import structlog

from mailbridge.logging import address_pseudonym, configure_logging
from mailbridge.privacy.erase import normalise
from mailbridge.privacy.mailtext import decoded_text, mentions, pseudonymise, senders
from mailbridge.settings import ConfigError, load_settings
from mailbridge.store.privacy_queries import NO_PERSONAL_DATA, PERSONAL_COLUMNS, textual_columns
from tests.unit.test_settings import ENV, VALID, _write

A = "juergen.mueller@kunde.example"
P = "erased-0123456789ab@erased.invalid"


def test_every_text_json_and_binary_column_of_every_table_is_classified():
    """A new column that can hold text is in PERSONAL_COLUMNS (the erasure sweeps it) or in
    NO_PERSONAL_DATA (with a reason), never in neither; and nothing classified is gone."""
    columns = set(textual_columns())
    assert len(columns) > 60
    personal = {(t, c) for t, cols in PERSONAL_COLUMNS.items() for c in cols}
    harmless = {(t, c) for t, cols in NO_PERSONAL_DATA.items() for c in cols}
    assert personal & harmless == set()
    assert columns - personal - harmless == set(), "classify these columns in store/privacy_queries.py"
    assert (personal | harmless) - columns == set(), "these columns no longer exist"


def _mail(body: str, cte: str, name: str = "Jürgen Müller") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Petra Kunde <petra@stadtwerke.example>"
    msg["To"] = "support@vendor.example"
    msg["Cc"] = f"{name} <{A}>"
    msg["Subject"] = "Zählerdaten"
    msg.set_content(body, cte=cte)
    msg.add_attachment(b"%PDF unrelated", maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes(policy=SMTP)


@pytest.mark.parametrize("cte", ["base64", "quoted-printable", "8bit"])
def test_an_address_is_found_and_replaced_in_headers_and_encoded_text(cte):
    raw = _mail(f"Hallo,\nKollege Müller ({A.upper()}) weiß mehr über die Zählerdaten.\n", cte)
    if cte == "base64":
        assert A.encode() not in raw.split(b"\r\n\r\n", 1)[1].lower()  # hidden from a plain grep of the body
    assert mentions(raw, A)
    new = pseudonymise(raw, {A: P})
    assert not mentions(new, A) and A not in decoded_text(new).lower()
    text = decoded_text(new)
    assert f"Kollege Müller ({P}) weiß mehr über die Zählerdaten." in text
    assert f"Jürgen Müller <{P}>" in text, "the display name stays; only the address goes"
    assert "petra@stadtwerke.example" in senders(new)


def test_a_mail_without_the_address_is_left_byte_for_byte():
    raw = _mail("Nichts über ihn.\n", "8bit")
    assert pseudonymise(raw, {"olga@other.example": P}) == raw


def test_the_address_only_in_an_rfc2047_name_is_not_the_address():
    raw = _mail("Text.\n", "8bit", name=f"=?utf-8?b?{base64.b64encode(b'juergen.mueller').decode()}?=")
    assert "juergen.mueller <" in decoded_text(raw)
    assert mentions(raw, A)  # the Cc address itself is still there
    assert not mentions(pseudonymise(raw, {A: P}), A)


def test_normalise_refuses_what_is_not_an_address():
    assert normalise("  Juergen.Mueller@Kunde.example ") == A
    for bad in ("juergen", "a@", "@b", "a b@c.d", "a@b@c"):
        with pytest.raises(ValueError, match="is not an e-mail address"):
            normalise(bad)


@pytest.fixture
def log_buffer():
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf, redact_addresses=True)
    yield buf
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


def test_redaction_replaces_every_address_in_every_field_line_and_traceback(log_buffer):
    log = structlog.get_logger("test")
    log.info("ack_queued", to=[A], case="C1000002", detail={"by": A.upper()})
    logging.getLogger("imapclient").warning("login for %s refused", A)
    try:
        raise RuntimeError(f"550 5.1.1 <{A}>: user unknown")
    except RuntimeError:
        log.exception("send_failed")
    lines = [json.loads(line) for line in log_buffer.getvalue().splitlines()]
    text = log_buffer.getvalue().lower()
    assert A not in text and "kunde.example" not in text
    pseudo = address_pseudonym(A)
    assert pseudo == address_pseudonym(A.upper()) and pseudo.startswith("addr-") and len(pseudo) == 17
    assert lines[0]["to"] == [pseudo] and lines[0]["detail"] == {"by": pseudo} and lines[0]["case"] == "C1000002"
    assert lines[1]["event"] == f"login for {pseudo} refused"
    assert pseudo in lines[2]["exception"]


def test_without_redaction_addresses_stay():
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    try:
        structlog.get_logger("test").info("ack_queued", to=A)
        assert json.loads(buf.getvalue())["to"] == A
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []


def test_check_config_names_the_retention_periods(tmp_path):
    from click.testing import CliRunner

    from mailbridge.cli import cli

    path = _write(tmp_path, VALID + "\n[retention]\nraw_days = 90\ncase_days = 1095\n")
    out = CliRunner().invoke(cli, ["--config", str(path), "check-config"], env=ENV).stdout
    assert "  retention: raw 90 d, cases 1095 d (daily at 03:15 UTC)" in out
    out = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, VALID)), "check-config"], env=ENV).stdout
    assert "  retention: none" in out


def test_retention_settings(tmp_path):
    s = load_settings(_write(tmp_path, VALID), ENV)
    assert s.retention.enabled is False and s.logging.redact_addresses is False
    ok = (
        VALID
        + '\n[retention]\nraw_days = 90\ncase_days = 1095\ndaily_at = "04:30"\n[logging]\nredact_addresses = true\n'
    )
    s = load_settings(_write(tmp_path, ok), ENV)
    assert (s.retention.raw_days, s.retention.case_days, s.retention.enabled) == (90, 1095, True)
    assert s.logging.redact_addresses is True
    for bad, words in (
        ("raw_days = 400\ncase_days = 365", "retention.raw_days: 400 is longer than case_days (365)"),
        ("noise_days = 0", "retention.noise_days"),
        ('daily_at = "25:00"', 'retention.daily_at: must be "HH:MM"'),
    ):
        with pytest.raises(ConfigError) as exc:
            load_settings(_write(tmp_path, VALID + f"\n[retention]\n{bad}\n"), ENV)
        assert words in str(exc.value), str(exc.value)
