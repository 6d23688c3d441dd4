"""``mailbridge privacy erase ADDRESS``: the person's data removed or pseudonymised everywhere.

What goes (the rule; the columns are named in ``store/privacy_queries.py``):

- **Cases the person opened** (requester or Reply-To): every message's text, subject and sender names,
  the raw mails, the attachments, the mails we sent about it (bytes emptied; an unsent one fails), the
  subject, the requester's name, the checklist's evidence. The skeleton stays: case number, dates,
  status, severity, SLA figures, the history's events.
- **Mails the person wrote** on any other case, and their auto-replies, bounces and quarantined mail:
  text, raw mail, attachments.
- **Other people's mail that names the person** (Cc, To, a quote): only the address is replaced, in
  the database and in the raw mail (rewritten, headers and text parts); its content stays.
- The address's bounce/suppression row and automatic-mail counts; then every column that may hold an
  address (the sweep) has the address replaced by the pseudonym ``erased-<random>@erased.invalid``.
- The copies in each account's Processed and Quarantine folders (IMAP SEARCH FROM/TO/CC/BCC): the
  person's own mails are deleted, other mails naming them are replaced by a rewritten copy.
- A content-addressed file (raw mail, attachment) still used by a row that is kept stays.
- A case under legal hold is left as it is and reported.

The case tracker's sign-in links and sign-in requests are deleted in :meth:`Eraser._other_stores`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from mailbridge.ingest.fetcher import FetchError, ImapMailbox
from mailbridge.oauth.source import TokenSource
from mailbridge.privacy import mailtext
from mailbridge.settings import Settings
from mailbridge.store import privacy_queries as pq
from mailbridge.store.db import Session, session_scope
from mailbridge.store.rawstore import ContentStore

log = structlog.get_logger(__name__)

PSEUDONYM_DOMAIN = "erased.invalid"


def new_pseudonym() -> str:
    """A random pseudonym: nothing links it to the erased address (it is not a hash of it)."""
    return f"erased-{secrets.token_hex(6)}@{PSEUDONYM_DOMAIN}"


def normalise(address: str) -> str:
    a = address.strip().lower()
    if a.count("@") != 1 or not all(a.split("@")) or any(c.isspace() for c in a):
        raise ValueError(f"{address!r} is not an e-mail address")
    return a


@dataclass
class ErasureReport:
    pseudonym: str
    dry_run: bool
    own_cases: list[str] = field(default_factory=list)
    other_cases: list[str] = field(default_factory=list)
    held_cases: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    imap_errors: list[str] = field(default_factory=list)

    def add(self, key: str, n: int) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n

    def lines(self) -> list[str]:
        verb = "would be" if self.dry_run else "were"
        out = [
            f"cases opened by the person ({len(self.own_cases)}): {', '.join(self.own_cases) or '-'}"
            f" — their content {'would be' if self.dry_run else 'was'} removed, numbers and SLA figures kept",
            f"other cases naming the person ({len(self.other_cases)}): {', '.join(self.other_cases) or '-'}"
            f" — the person's mails {verb} removed, the address replaced",
        ]
        if self.held_cases:
            out.append(f"under legal hold, skipped ({len(self.held_cases)}): {', '.join(self.held_cases)}")
        for key in sorted(self.counts):
            out.append(f"  {key}: {self.counts[key]}")
        out.extend(f"  IMAP: {e}" for e in self.imap_errors)
        if not self.dry_run:
            out.append(f"the address is now {self.pseudonym} everywhere it stays (audit log: privacy_audit)")
        return out


class Eraser:
    def __init__(
        self,
        settings: Settings,
        session_factory,
        raw_store: ContentStore,
        attachments: ContentStore,
        clock,
        tokens: Mapping[str, TokenSource] | None = None,
    ):
        self.settings = settings
        # The OAuth2 token sources of the accounts that log in with auth = "oauth2" (App.token_sources).
        self.tokens = tokens or {}
        self.session_factory = session_factory
        self.raw_store = raw_store
        self.attachments = attachments
        self.clock = clock

    def erase(self, address: str, *, dry_run: bool = False, by: str = "operator") -> ErasureReport:
        a = normalise(address)
        if a in {o.lower() for o in self.settings.own_addresses}:
            raise ValueError(f"{a} is one of our support addresses, not a person's")
        report = ErasureReport(pseudonym=new_pseudonym(), dry_run=dry_run)
        mapping = {a: report.pseudonym}
        now = self.clock()
        doomed: list[Path] = []
        gone: set[str] = set()  # the Message-IDs of the mails whose content goes
        kept: set[str] = set()  # … and of the mails of held cases (their IMAP copies stay too)
        # First, while the rows still name the address (the sweep below would pseudonymise them).
        self._other_stores(a, report, dry_run)
        with session_scope(self.session_factory) as s:
            held = pq.held_ticket_ids(s)
            cases = pq.person_cases(s, a)
            report.own_cases = [c.case_number for c in cases if c.own and not c.held]
            report.other_cases = [c.case_number for c in cases if not c.own and not c.held]
            report.held_cases = [c.case_number for c in cases if c.held]
            own = [c.id for c in cases if c.own and not c.held]
            touched = {c.id for c in cases if not c.held}
            written = pq.messages_from(s, a, held)
            gone = pq.message_id_values(s, written + [m for tid in own for m in pq.case_message_ids(s, tid)])
            gone |= {q for q in pq.quarantine_message_ids(s, a) if q}
            held_ids = [c.id for c in cases if c.held]
            kept = pq.message_id_values(s, [m for tid in held_ids for m in pq.case_message_ids(s, tid)])
            if dry_run:
                self._plan(s, a, own, written, held, report)
                s.rollback()
            else:
                doomed = self._apply(s, a, mapping, own, touched, written, held, now, report)
                for tid in touched:
                    pq.add_case_event(s, tid, "personal_data_erased", now, pseudonym=report.pseudonym, by=by)
                pq.audit(
                    s,
                    "erase",
                    by,
                    now,
                    pseudonym=report.pseudonym,
                    cases=report.own_cases + report.other_cases,
                    held=report.held_cases,
                    counts=dict(report.counts),
                )
        for path in doomed:  # after the commit: a rollback must find its files
            path.unlink(missing_ok=True)
        self._imap(a, mapping, gone, kept, report, dry_run)
        log.info(
            "privacy_erased" if not dry_run else "privacy_erase_planned",
            pseudonym=report.pseudonym,
            cases=len(report.own_cases) + len(report.other_cases),
            held=report.held_cases,
            **report.counts,
        )
        return report

    # -- the database and var/ ----------------------------------------------------------------------

    def _plan(self, s: Session, a: str, own: list[int], written: list[int], held: set[int], report) -> None:
        msgs = set(written)
        for tid in own:
            msgs.update(pq.case_message_ids(s, tid))
        report.add("messages whose text goes", len(msgs))
        health, auto = pq.suppression_rows(s, a)
        report.add("suppression rows", health)
        report.add("automatic-mail records", auto)
        report.add("quarantined mails", len(pq.quarantine_from(s, a)))
        rewrite = sum(
            1
            for _rid, path in pq.raws_to_check(s, a, held)
            if (self.raw_store.root / path).exists() and mailtext.mentions(self.raw_store.get(path), a)
        )
        report.add("raw mails to check (removed or rewritten)", rewrite)

    def _apply(self, s, a, mapping, own, touched, written, held, now, report) -> list[Path]:
        raws: list[tuple[int, str]] = []
        digests: set[str] = set()
        for tid in own:
            r = pq.remove_case(s, tid, now)
            report.add("messages: text removed", r.messages)
            raws += r.raws
            digests.update(d for _i, d in r.attachments)
            report.add("attachments removed", len(r.attachments))
        r = pq.remove_message_text(s, written, now)
        report.add("messages: text removed", r.messages)
        raws += r.raws
        digests.update(d for _i, d in r.attachments)
        report.add("attachments removed", len(r.attachments))
        quarantined = pq.quarantine_from(s, a)
        raws += pq.purge_raws(s, [rid for _q, rid in quarantined if not pq.raw_used_by_message(s, rid)], now)
        report.add("quarantined mails removed", pq.delete_quarantine(s, [q for q, _r in quarantined]))
        report.add("participations ended", pq.retire_participant(s, a, held))
        health, auto = pq.delete_suppression(s, a)
        report.add("suppression rows removed", health)
        report.add("automatic-mail records removed", auto)
        report.add("raw mails removed", len(raws))

        doomed = [self.raw_store.root / path for _i, path in raws]
        # Other people's raw mails that name the person: rewritten, their old file goes.
        purged = {i for i, _p in raws}
        for rid, path in pq.raws_to_check(s, a, held):
            if rid in purged or not (self.raw_store.root / path).exists():
                continue
            data = self.raw_store.get(path)
            if not mailtext.mentions(data, a):
                continue
            new = mailtext.pseudonymise(data, mapping)
            if a in mailtext.senders(data) or mailtext.mentions(new, a):
                # The person's own mail (a duplicate), or one whose attachment names them: it goes.
                gone = pq.purge_raws(s, [rid], now)
                doomed += [self.raw_store.root / p for _i, p in gone]
                report.add("raw mails removed", len(gone))
                continue
            _digest, new_path = self.raw_store.put(new)
            old = pq.replace_raw(s, rid, new_path, len(new))
            report.add("raw mails rewritten", 1)
            if old and old != new_path and not pq.raw_path_used(s, old):
                doomed.append(self.raw_store.root / old)
        # The mails we sent: those to the person stop if unsent; their bytes lose the address.
        for oid, raw, envelope, status in pq.outbox_rows_for(s, touched, a):
            values = {}
            if raw and mailtext.mentions(raw, a):
                values["raw"] = mailtext.pseudonymise(raw, mapping)
            if status in pq.UNSENT and any(e.lower() == a for e in envelope):
                rest = [e for e in envelope if e.lower() != a]
                values["envelope_to"] = rest
                if not rest:
                    values.update(status="failed", last_error="recipient's data erased before sending")
            if values:
                pq.set_outbox(s, oid, **values)
                report.add("sent mails rewritten", 1)
        digests_gone = pq.attachment_files_unused(s, digests)
        doomed += [self.attachments.root / self.attachments.relpath(d) for d in digests_gone]
        report.add("attachment files deleted", len(digests_gone))
        report.add("attachment files kept for another person's mail", len(digests - digests_gone))
        # Last: the address wherever it is left, in every column that may hold it.
        for table, n in pq.sweep(s, mapping, skip_tickets=held).items():
            report.add(f"rows pseudonymised in {table}", n)
        return doomed

    # -- IMAP -----------------------------------------------------------------------------------------

    def _imap(
        self, a: str, mapping: dict[str, str], gone: set[str], kept: set[str], report: ErasureReport, dry_run: bool
    ) -> None:
        """The copies in each account's Processed and Quarantine folders: the person's own mails and
        those whose content the erasure removed (by Message-ID: e.g. a bounce of a mail to them) are
        deleted; other mails that name them are replaced by a copy without the address; the mails of
        cases under legal hold stay as they are."""
        # TEXT: also a mail that names them only in its text (a bounce returning their mail).
        criteria = ["OR", "OR", "FROM", a, "TO", a, "OR", "OR", "CC", a, "BCC", a, "TEXT", a]
        for acc in self.settings.accounts:
            box = ImapMailbox(acc, self.tokens.get(acc.name))
            try:
                box.connect()
                for folder in (acc.processed_folder, acc.quarantine_folder):
                    found = box.folder_messages(folder, criteria)
                    delete, append = [], []
                    for uid, (raw, flags, when) in sorted(found.items()):
                        mid = mailtext.message_id(raw)
                        if mid is not None and mid in kept:
                            continue
                        if a in mailtext.senders(raw) or mid in gone:
                            delete.append(uid)
                        elif mailtext.mentions(raw, a):
                            delete.append(uid)
                            new = mailtext.pseudonymise(raw, mapping)
                            if not mailtext.mentions(new, a):  # else (an attachment names them) it goes
                                append.append((new, flags, when))
                    report.add(f"IMAP {acc.name}/{folder}: mails deleted", len(delete) - len(append))
                    report.add(f"IMAP {acc.name}/{folder}: mails rewritten", len(append))
                    if not dry_run and delete:
                        box.replace_in_folder(folder, delete, append)
            except FetchError as e:
                report.imap_errors.append(f"account {acc.name}: {e}")
                log.warning("privacy_imap_failed", account=acc.name, error=str(e).splitlines()[0][:200])
            finally:
                box.close()

    def _other_stores(self, a: str, report: ErasureReport, dry_run: bool) -> None:
        """The one place for stores that hold the address outside the mail and case tables: the case
        tracker's sign-in links (only their hashes, but bound to the address) and its sign-in
        requests (the address and the client's IP), deleted."""
        with session_scope(self.session_factory) as s:
            report.add("case tracker sign-in records deleted", pq.forget_signins(s, a))
            if dry_run:
                s.rollback()
