"""Replies in the shapes real mail clients produce (tests/data/replies: Outlook, Thunderbird, Gmail,
Apple Mail, mobile; top-posted and inline) all land on the right case through the real IMAP server,
by the rule each is built for, and the new text stored for each holds no quoted history."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.integration.conversation_support import make_desk, to
from tests.support import SUPPORT_ADDRESS, make_mail

REPLIES = Path(__file__).parents[1] / "data" / "replies"
MANIFEST = tomllib.loads((REPLIES / "MANIFEST.toml").read_text(encoding="utf-8"))
REQUESTER = "max.mustermann@acme.example"


def _entries() -> list[tuple[str, dict]]:
    files = MANIFEST.get("files", MANIFEST)
    if isinstance(files, list):
        return [(e["file"], e) for e in files]
    return list(files.items())


@pytest.fixture
def desk(tmp_path, imap_server, smtp_sink, db_url, imap_env):
    # Forty first mails from one address within a minute are what the per-recipient limit on
    # acknowledgements (30 in 10 minutes) is for; this test is about reply shapes, so it allows more.
    d = make_desk(
        tmp_path,
        imap_server,
        smtp_sink,
        db_url,
        conversations="\n[auto_mail]\nper_recipient = [{ max = 100, minutes = 10 }]\n",
    )
    yield d
    d.app.close()


def test_every_reply_shape_lands_on_its_case_with_clean_new_text(desk):
    """One case per fixture (opened by a customer mail and acknowledged); each reply, with the case's
    number and our acknowledgement's Message-ID filled in, is attached to exactly that case."""
    entries = _entries()
    assert len(entries) >= 30
    originals = [
        make_mail(
            subject=f"Export-Problem {i}",
            body="Der Export nach PDF bricht mit Fehler 0x80004005 ab.",
            sender=("Max Mustermann", REQUESTER),
            message_id=f"<orig-{i}@acme.example>",
        )
        for i in range(len(entries))
    ]
    sent = desk.deliver(*originals)
    acks = {m.header("In-Reply-To").strip("<>"): m for m in to(sent, REQUESTER)}
    assert len(acks) == len(entries)

    replies, expected = [], {}
    for i, (name, entry) in enumerate(entries):
        ack = acks[f"orig-{i}@acme.example"]
        case = ack.header("Subject").split("]")[0].strip("[")
        raw = (REPLIES / name).read_bytes()
        for key, value in {
            b"@@CASE@@": case,
            b"@@ACK_ID@@": ack.header("Message-ID").strip().strip("<>"),
            b"@@ORIG_ID@@": f"orig-{i}@acme.example",
            b"@@REQUESTER@@": REQUESTER,
            b"@@SUPPORT@@": SUPPORT_ADDRESS,
        }.items():
            raw = raw.replace(key, value.encode())
        replies.append(raw)
        expected[name] = (case, entry)
    desk.deliver(*replies)

    wrong = []
    for name, (case, entry) in expected.items():
        msgs = [m for m in desk.messages(case) if m.direction == "in"]
        if len(msgs) != 2:
            wrong.append(f"{name}: {len(msgs) - 1} replies on {case}")
            continue
        reply = msgs[1]
        rule = entry["rule"]
        if reply.routing["rule"] != rule:
            wrong.append(f"{name}: routed by {reply.routing['rule']}, expected {rule}")
        new = reply.body_new or ""
        for s in entry.get("new_text_contains", []):
            if s not in new:
                wrong.append(f"{name}: new text lacks {s!r}")
        for s in entry.get("new_text_excludes", []):
            if s in new:
                wrong.append(f"{name}: new text still has {s!r}")
        if "0x80004005" in new:
            wrong.append(f"{name}: quoted original in the new text")
    assert not wrong, "\n".join(wrong)
    assert len(desk.tickets()) == len(entries)  # no reply opened a case of its own
