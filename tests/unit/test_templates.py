"""Acknowledgement templates: customer text stays inert, HTML is escaped, missing data is an error."""

from __future__ import annotations

import pytest
from jinja2 import TemplateNotFound, UndefinedError
from jinja2.sandbox import SecurityError
from markupsafe import Markup

from mailbridge.outbound.templates import Templates

# The context the acknowledgement step passes (mailbridge.ingest.steps.Acknowledge).
BASE_CONTEXT = {
    "case_number": "C1234566",
    "subject": "Lizenzserver startet nicht",
    "requester_name": "Jürgen Müller",
    "requester_email": "juergen.mueller@kunde.example",
    "queue_name": "Vendor Support",
    "support_address": "support@vendor.example",
    "attachments": ["log.txt"],
    "previous_case": None,
    "unknown_references": [],
    "severity": None,
    "first_response_due": None,
    "no_contract": False,
}
# Variables every body template reads (requester_email is passed but not used by the shipped templates).
BODY_VARIABLES = ["case_number", "subject", "requester_name", "queue_name", "support_address", "attachments"]
LANGUAGES = ["de", "en"]
BODIES = ["ack.txt.j2", "ack.html.j2"]

INJECTIONS = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}X{% endfor %}",
    "{% for %}",
    "{{ ''.__class__.__mro__ }}",
    "{# comment #}",
]


@pytest.fixture(scope="module")
def templates():
    return Templates()


def _ctx(**over):
    return {**BASE_CONTEXT, **over}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", [*BODIES, "ack.subject.j2"])
@pytest.mark.parametrize("payload", INJECTIONS)
def test_template_syntax_in_customer_text_is_rendered_literally(templates, language, name, payload):
    """Jinja syntax in the subject or the requester's name is printed as text, never evaluated."""
    out = templates.render(language, name, **_ctx(subject=payload, requester_name=payload))
    expected = payload if not name.endswith("html.j2") else payload.replace("'", "&#39;")
    assert expected in out
    assert "49" not in out
    assert "XXX" not in out


@pytest.mark.parametrize("language", LANGUAGES)
def test_html_body_escapes_markup(templates, language):
    """In the HTML body ``<script>``, quotes and ampersands from customer data are escaped."""
    out = templates.render(
        language,
        "ack.html.j2",
        **_ctx(
            subject='<script>alert("x")</script> & Co',
            requester_name="<b>Eve</b>",
            attachments=["<img src=x onerror=alert(1)>.png"],
        ),
    )
    assert "<script>" not in out
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in out
    assert "&lt;b&gt;Eve&lt;/b&gt;" in out
    assert "<img" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in out
    assert "<strong>C1234566</strong>" in out  # the template's own markup is untouched


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", ["ack.txt.j2", "ack.subject.j2"])
def test_text_templates_do_not_escape(templates, language, name):
    """Plain-text bodies and the subject keep ``<``, ``>``, ``&`` and quotes as typed."""
    subject = 'Fehler <500> & "Timeout" bei O\'Brien'
    out = templates.render(language, name, **_ctx(subject=subject))
    assert subject in out
    assert "&lt;" not in out
    assert "&amp;" not in out


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", BODIES)
@pytest.mark.parametrize("missing", BODY_VARIABLES)
def test_missing_variable_raises(templates, language, name, missing):
    """StrictUndefined: leaving out any variable a body uses is an error, not an empty string."""
    ctx = _ctx()
    del ctx[missing]
    with pytest.raises(UndefinedError):
        templates.render(language, name, **ctx)


@pytest.mark.parametrize("language", LANGUAGES)
def test_missing_subject_in_subject_template_raises(templates, language):
    """The subject template needs ``subject`` too."""
    with pytest.raises(UndefinedError):
        templates.render(language, "ack.subject.j2")


@pytest.mark.parametrize("language", LANGUAGES)
def test_empty_subject_uses_the_template_default(templates, language):
    """An empty (but present) subject falls back to the localised default wording."""
    out = templates.render(language, "ack.subject.j2", subject="").strip()
    assert out == {"de": "Ihre Anfrage", "en": "Your request"}[language]


def test_languages_differ(templates):
    """German and English bodies are really different texts."""
    de = templates.render("de", "ack.txt.j2", **_ctx())
    en = templates.render("en", "ack.txt.j2", **_ctx())
    assert de.startswith("Guten Tag Jürgen Müller,")
    assert en.startswith("Hello Jürgen Müller,")
    assert "C1234566" in de
    assert "C1234566" in en


@pytest.mark.parametrize("name", [*BODIES, "ack.subject.j2"])
def test_unknown_language_falls_back(templates, name):
    """A language without templates renders the fallback language's template."""
    assert templates.render("fr", name, **_ctx()) == templates.render("en", name, **_ctx())


def test_fallback_language_is_configurable(tmp_path):
    """The fallback language is a constructor argument; a missing template in both raises."""
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "hello.txt.j2").write_text("Hallo {{ who }}", encoding="utf-8")
    t = Templates(root=tmp_path, fallback_language="de")
    assert t.render("en", "hello.txt.j2", who="Welt") == "Hallo Welt"
    assert t.has("de", "hello.txt.j2")
    assert not t.has("en", "hello.txt.j2")
    with pytest.raises(TemplateNotFound):
        t.render("en", "missing.txt.j2")


def test_autoescape_follows_the_file_extension(tmp_path):
    """``.html.j2`` templates autoescape, ``.txt.j2`` templates do not."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "x.html.j2").write_text("{{ v }}", encoding="utf-8")
    (tmp_path / "en" / "x.txt.j2").write_text("{{ v }}", encoding="utf-8")
    t = Templates(root=tmp_path)
    assert t.render("en", "x.html.j2", v="<a&b>") == "&lt;a&amp;b&gt;"
    assert t.render("en", "x.txt.j2", v="<a&b>") == "<a&b>"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ v.__class__.__base__ }}",
    ],
)
def test_sandbox_blocks_unsafe_attribute_access(tmp_path, source):
    """Even a template file itself cannot reach Python internals: the environment is sandboxed."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "evil.txt.j2").write_text(source, encoding="utf-8")
    with pytest.raises(SecurityError):
        Templates(root=tmp_path).render("en", "evil.txt.j2", v="x")


def test_context_may_use_any_variable_name(tmp_path):
    """Template variables called ``name`` or ``language`` reach the template like any other."""
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "x.txt.j2").write_text("{{ name }}/{{ language }}", encoding="utf-8")
    assert Templates(root=tmp_path).render("en", "x.txt.j2", name="Anna", language="de") == "Anna/de"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", BODIES)
def test_ack_says_when_a_case_follows_a_closed_one_and_names_unknown_numbers(templates, language, name):
    """The acknowledgement of a follow-up case names the closed case; unknown numbers are reported,
    with the suggestion when there is one."""
    out = templates.render(
        language,
        name,
        **_ctx(
            previous_case="C1000002",
            unknown_references=[
                {"number": "C1000020", "reason": "check digit", "suggestion": "C1000002"},
                {"number": "C9999994", "reason": "no such case", "suggestion": None},
            ],
        ),
    )
    assert out.count("C1000002") >= 2 and "C1000020" in out and "C9999994" in out
    assert ("abgeschlossen" if language == "de" else "closed") in out


NOTIFICATION = {
    "marker": "##- marker -##",
    "event": "new",
    "case_number": "C1000002",
    "subject": "Drucker",
    "status": "new",
    "severity": None,
    "assignee": None,
    "sender_name": "Jürgen Müller",
    "sender_email": "juergen.mueller@kunde.example",
    "role": "requester",
    "flags": ["unknown third party x@y.example referenced this case"],
    "urgency": ["dringend"],
    "attachments": ["log.txt"],
    "linked_case": None,
    "severity_levels": ["1", "2"],
    "queue_name": "Vendor Support",
    "too_large": [],
    "budget": "10.0 MB",
    "link_days": "30",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("payload", INJECTIONS)
def test_agent_mails_render_customer_and_agent_text_literally(templates, language, payload):
    """Notification, relay and command-error templates print customer and agent text as it is."""
    too_large = [{"name": payload, "size": "30.2 MB", "url": None}]
    note = templates.render(
        language,
        "notification.txt.j2",
        **{**NOTIFICATION, "text": payload, "subject": payload, "too_large": too_large},
    )
    assert note.startswith("##- marker -##") and payload in note
    assert f"  {payload} (30.2 MB): " in note
    assert ("ACHTUNG" if language == "de" else "ATTENTION") in note
    relay = templates.render(
        language,
        "relay.txt.j2",
        text=payload,
        agent_name="Anna",
        queue_name="Vendor Support",
        support_address="support@vendor.example",
        case_number="C1000002",
    )
    assert relay.startswith(payload) and "Anna" in relay
    err = templates.render(language, "command_error.txt.j2", case_number="C1000002", errors=[payload], verified=True)
    assert payload in err
    for out in (note, relay, err):
        assert "49" not in out and "XXX" not in out


ESCALATION = {
    "marker": "##- marker -##",
    "case_number": "C1000002",
    "status": "open",
    "assignee": None,
    "requester": "juergen.mueller@kunde.example",
    "queue_name": "Vendor Support",
    "clock": "Erstreaktion",
    "stage": "75%",
    "repeat": 0,
    "due": "Mo., 23.11.2026, 10:00 MEZ",
    "created": "Fr., 20.11.2026, 15:00 MEZ",
    "severity": "Fehlerklasse 1",
    "organisation": "Stadtwerke",
    "contract": "Wartungsvertrag",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", ["created", "warning", "breach", "repeat"])
@pytest.mark.parametrize("payload", INJECTIONS)
def test_escalation_mails_print_the_subject_literally_and_say_what_happened(templates, language, kind, payload):
    ctx = {**ESCALATION, "kind": kind, "subject": payload, "repeat": 2 if kind == "repeat" else 0}
    body = templates.render(language, "escalation.txt.j2", **ctx)
    subject = templates.render(language, "escalation.subject.j2", **ctx)
    assert payload in body and payload in subject and body.startswith("##- marker -##")
    words = {
        "de": {"created": "sofort eskaliert", "warning": "75%", "breach": "verstrichen", "repeat": "2. Erinnerung"},
        "en": {"created": "escalated at once", "warning": "75%", "breach": "has passed", "repeat": "reminder 2"},
    }
    assert words[language][kind] in body


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", BODIES)
def test_ack_without_contract_promises_no_response_time(templates, language, name):
    with_contract = templates.render(language, name, **BASE_CONTEXT)
    without = templates.render(language, name, **{**BASE_CONTEXT, "no_contract": True})
    marker = {"de": "kein Service- und Wartungsvertrag", "en": "no service and maintenance contract"}[language]
    assert marker not in with_contract and marker in without


@pytest.mark.parametrize("language", LANGUAGES)
def test_digest_lists_are_capped_and_say_how_many_more_there_are(templates, language):
    from mailbridge.sla.digest import Digest, Line, QueueDigest

    line = Line("C1000002", "<b>Drucker</b> {{ 7*7 }}", "Stadtwerke", "Fehlerklasse 1", "open", "x", "Mo 10:00", "2 h")
    q = QueueDigest("software", "Software", active=70, breached=[line] * 2, breached_total=60)
    d = Digest("morgens", language, "Di 08:00 MEZ", [q])
    text = templates.render(language, "digest.txt.j2", digest=d, queues=d.queues)
    html = templates.render(language, "digest.html.j2", digest=d, queues=d.queues)
    subject = templates.render(language, "digest.subject.j2", digest=d, queues=d.queues)
    more = {"de": "… und 58 weitere", "en": "… and 58 more"}[language]
    assert more in text and more in html and "60" in subject
    assert "{{ 7*7 }}" in text and "&lt;b&gt;Drucker" in html and "<b>Drucker" not in html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("whole", [False, True])
def test_notification_html_escapes_the_frame_and_inserts_the_sanitised_html(templates, language, whole):
    """The HTML alternative of the notification: every value of the frame escaped (autoescape), the
    customer's HTML (Markup from outbound/customer_html.py) as it is; a reply's new text above its
    whole HTML, behind a separator."""
    evil = '<script>alert("x")</script>'
    too_large = [
        {"name": evil, "size": "30.2 MB", "url": "https://support.example/attachments/1.a?b=<x>"},
        {"name": "kc4.zip", "size": "12.0 MB", "url": None},
    ]
    out = templates.render(
        language,
        "notification.html.j2",
        **{
            **NOTIFICATION,
            "event": "reply" if whole else "new",
            "subject": evil,
            "sender_name": evil,
            "text": f"neu {evil}",
            "too_large": too_large,
            "checklist": [{"label": "Seriennummer", "given": False, "evidence": None}],
            "raised_to": None,
            "customer_html": Markup('<p>Guten <b>Tag</b></p><img src="cid:a@b">'),
            "whole_html": whole,
        },
    )
    assert "<script>" not in out and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in out
    assert '<p>Guten <b>Tag</b></p><img src="cid:a@b">' in out
    assert out.count("##- marker -##") == 1
    assert 'href="https://support.example/attachments/1.a?b=&lt;x&gt;"' in out
    assert ("ACHTUNG" if language == "de" else "ATTENTION") in out
    assert ("fehlt" if language == "de" else "missing") in out and "kc4.zip (12.0 MB)" in out
    separator = "Die ganze Mail des Kunden" if language == "de" else "The customer's whole mail"
    assert (separator in out) is whole
    assert ("neu &lt;script&gt;" in out) is whole
    if whole:
        assert out.index("neu &lt;script&gt;") < out.index(separator) < out.index("<p>Guten <b>Tag</b>")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("late", [None, "Mo. 23.11. 08:00"])
@pytest.mark.parametrize("inline", [False, True])
def test_the_report_mail_names_its_file_or_its_html_and_says_when_it_is_late(templates, language, late, inline):
    ctx = {
        "name": "offene-punkte",
        "report": "open-items",
        "summary": "Open items: 3 open, {{ 7*7 }}",
        "filename": "open-items-2026-11-23.xlsx",
        "generated": "Mo. 23.11.2026 08:00 MEZ",
        "late": late,
        "inline": inline,
    }
    subject = templates.render(language, "report.subject.j2", **ctx).strip()
    text = templates.render(language, "report.txt.j2", **ctx)
    assert "offene-punkte" in subject and "{{ 7*7 }}" in subject and "{{ 7*7 }}" in text
    late_words = {"de": "verspätet gesendet)", "en": "sent late)"}[language]
    assert subject.endswith(late_words) == bool(late)
    assert ("Mo. 23.11. 08:00" in text) == bool(late)
    assert ("open-items-2026-11-23.xlsx" in text) != inline
    # StrictUndefined: every variable the mail reads must be given (the file name only when attached).
    for key in [k for k in ctx if k != "filename" or not inline]:
        with pytest.raises(UndefinedError):
            templates.render(language, "report.txt.j2", **{k: v for k, v in ctx.items() if k != key})
