"""What a token endpoint's refusal means (oauth/faults.py), and the alert mails about OAuth logins in
both languages (every variable provided: the templates are StrictUndefined)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from mailbridge.alerts import Action, Alerts, Level, oauth_findings
from mailbridge.oauth.faults import TokenError, explain
from mailbridge.outbound.templates import Templates
from tests.unit.test_oauth_settings import ENV, _load


@pytest.mark.parametrize(
    ("error", "description", "codes", "permanent", "words"),
    [
        ("invalid_grant", "AADSTS50173: The provided grant has expired", [50173], True, "password changed"),
        ("invalid_grant", "AADSTS700082: The refresh token has expired due to inactivity.", None, True, "90 days"),
        ("invalid_grant", "AADSTS70008: expired", None, True, "90 days"),
        ("invalid_client", "AADSTS7000222: The provided client secret keys are expired.", [7000222], True, "expired"),
        ("invalid_client", "AADSTS7000215: Invalid client secret provided.", None, True, "not its Secret ID"),
        ("invalid_grant", "AADSTS65001: consent", None, True, "admin consent"),
        (
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method",
            None,
            True,
            "domain-wide delegation",
        ),
        ("invalid_grant", "Token has been expired or revoked.", None, True, "revoked"),
        ("invalid_grant", "something else", None, True, "sign in again"),
        ("temporarily_unavailable", "busy", None, False, "retrying"),
        ("server_error", None, None, False, "retrying"),
        (None, "ConnectionError: refused", None, False, "did not answer"),
        ("slow_down", None, None, False, "retrying"),
    ],
)
def test_explain(error, description, codes, permanent, words):
    p, hint = explain(error, description, codes)
    assert p is permanent and words in hint


def test_token_error_names_the_aadsts_code_and_hides_nothing_else():
    e = TokenError.from_response(
        "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked.\nTrace ID: x", [50173]
    )
    assert e.code == "AADSTS50173" and e.permanent
    assert str(e) == "invalid_grant: AADSTS50173: The provided grant has expired due to it being revoked."
    assert e.describe().startswith(str(e) + "; AADSTS50173: the grant was revoked")
    assert TokenError.from_response("invalid_scope", None).code == "invalid_scope"


@pytest.mark.parametrize("lang", ["de", "en"])
def test_oauth_alert_mails_render_in_both_languages(tmp_path, lang):
    _, settings = _load(tmp_path)
    settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"language": lang})})
    o = settings.account("support").oauth2
    settings.account("support").__dict__["oauth2"] = o.model_copy(update={"client_secret_expires": date(2026, 12, 10)})
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    token = SimpleNamespace(
        reauth_required=True,
        error_code="AADSTS7000222",
        last_error="invalid_client: AADSTS7000222: expired",
        failing_since=now - timedelta(minutes=5),
    )
    findings = oauth_findings(settings, {}, {"support": token}, now)
    kinds = {f.kind: f for f in findings}
    assert set(kinds) == {"token_reauth", "secret_expiry"}
    assert kinds["secret_expiry"].level is Level.WARNING and kinds["secret_expiry"].facts["days"] == 7
    assert kinds["token_reauth"].repeat_minutes == 24 * 60
    alerts = Alerts(settings, Templates(None, fallback_language="en"))
    for f in findings:
        subject, text = alerts.render(f, None, Action.FIRE, now)
        assert "{{" not in text and "support" in subject
        # trim_blocks eats the newline after a block tag: the next sentence starts its own line.
        if f.kind == "token_reauth":
            assert "\n`mailbridge auth status`" in text, text
        state = SimpleNamespace(detail={"kind": f.kind, "facts": f.facts, "since": now.isoformat()}, firing_since=now)
        subject, text = alerts.render(None, state, Action.CLEAR, now + timedelta(hours=1))
        assert subject.startswith("[mailbridge] Back to normal" if lang == "en" else "[mailbridge] Wieder in Ordnung")
    # Secrets are never in these mails.
    assert ENV["MB_SECRET"] not in text
