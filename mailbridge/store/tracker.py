"""The case tracker's queries (``mailbridge web``): the cases a viewer may see, one case's public
conversation, sign-in tokens and the sign-in requests the rate limits count.

Who a viewer is (:class:`Viewer`) is decided by ``web/visibility.py`` ``viewer_for``; this module
only applies it (:func:`visible`), so every query of the tracker asks the same clause: a case the
viewer may not see is simply not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql.elements import ColumnElement

from mailbridge.store.models import AttachmentRow, Message, Participant, SigninRequest, SigninToken, Ticket
from mailbridge.vocabulary import MessageKind

# The roles of a case's participants that are the customer's side (never agents, never a third party).
CUSTOMER_ROLES = ("requester", "customer")
# What a customer sees of a case's mail: their side's messages and what we sent them.
PUBLIC_INBOUND = (MessageKind.CUSTOMER.value,)
PUBLIC_OUTBOUND = (MessageKind.ACK.value, MessageKind.RELAY.value, MessageKind.SEVERITY_NOTICE.value)
SORTS = ("updated", "created", "severity", "due")


@dataclass(frozen=True)
class Viewer:
    """A signed-in address; ``organisation`` its [[organisations]] entry (None: none), and whether
    that organisation lets its people see all of its cases (``tracker = "organisation"``)."""

    address: str
    organisation: str | None = None
    organisation_wide: bool = False


def visible(viewer: Viewer) -> ColumnElement[bool]:
    """The cases ``viewer`` may see: all of their organisation's when it allows it; else those they
    are the requester or a customer-side participant of, and never one of another organisation."""
    if viewer.organisation_wide and viewer.organisation:
        return Ticket.organisation == viewer.organisation
    own = or_(
        Ticket.requester_email == viewer.address,
        exists().where(
            Participant.ticket_id == Ticket.id,
            Participant.email == viewer.address,
            Participant.role.in_(CUSTOMER_ROLES),
        ),
    )
    same_org = (
        or_(Ticket.organisation.is_(None), Ticket.organisation == viewer.organisation)
        if viewer.organisation
        else Ticket.organisation.is_(None)
    )
    return and_(own, or_(Ticket.requester_email == viewer.address, same_org))


def _public_message() -> ColumnElement[bool]:
    return or_(
        and_(Message.direction == "in", Message.kind.in_(PUBLIC_INBOUND)),
        and_(Message.direction == "out", Message.kind.in_(PUBLIC_OUTBOUND)),
    )


@dataclass(frozen=True)
class CaseRow:
    case_number: str
    subject: str
    status: str
    severity: str | None
    queue: str
    organisation: str | None
    created_at: datetime
    updated_at: datetime
    first_response_due: datetime | None
    first_response_at: datetime | None
    resolution_due: datetime | None


_ROW_COLUMNS = (
    Ticket.case_number,
    Ticket.subject,
    Ticket.status,
    Ticket.severity,
    Ticket.queue,
    Ticket.organisation,
    Ticket.created_at,
    Ticket.updated_at,
    Ticket.first_response_due,
    Ticket.first_response_at,
    Ticket.resolution_due,
)


def _next_due():
    """The next promise of a case: the first response while none was given, else the resolution."""
    return case((Ticket.first_response_at.is_(None), Ticket.first_response_due), else_=Ticket.resolution_due)


def list_cases(
    session: Session,
    viewer: Viewer,
    *,
    text: str = "",
    status: str | None = None,
    severity: str | None = None,
    queue: str | None = None,
    sort: str = "updated",
    descending: bool = True,
    page: int = 1,
    page_size: int = 25,
) -> tuple[list[CaseRow], int]:
    """One page of the viewer's cases and how many there are in all. ``text`` matches the case
    number, the subject, or the text of a message the viewer may see (case-insensitive)."""
    where = [visible(viewer)]
    if status:
        where.append(Ticket.status == status)
    if severity:
        where.append(Ticket.severity == severity)
    if queue:
        where.append(Ticket.queue == queue)
    text = text.strip()
    if text:
        like = f"%{_escape_like(text.lower())}%"
        where.append(
            or_(
                func.lower(Ticket.case_number).like(like, escape="\\"),
                func.lower(Ticket.subject).like(like, escape="\\"),
                exists().where(
                    Message.ticket_id == Ticket.id,
                    _public_message(),
                    func.lower(Message.body_text).like(like, escape="\\"),
                ),
            )
        )
    key = {
        "created": Ticket.created_at,
        "severity": Ticket.severity,
        "due": _next_due(),
    }.get(sort, Ticket.updated_at)
    order = key.desc() if descending else key.asc()
    total = session.scalar(select(func.count()).select_from(Ticket).where(*where)) or 0
    page = max(1, page)
    rows = session.execute(
        select(*_ROW_COLUMNS)
        .where(*where)
        .order_by(order.nulls_last(), Ticket.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    return [CaseRow(*r) for r in rows], total


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def facets(session: Session, viewer: Viewer) -> tuple[list[str], list[str], list[str]]:
    """The statuses, severities and queues among the viewer's cases (the filters' choices)."""
    out = []
    for col in (Ticket.status, Ticket.severity, Ticket.queue):
        out.append(sorted(v for v in session.scalars(select(col).where(visible(viewer)).distinct()) if v is not None))
    return out[0], out[1], out[2]


def case_for(session: Session, viewer: Viewer, case_number: str) -> Ticket | None:
    """The case ``case_number`` if the viewer may see it; else None (unknown and foreign alike)."""
    if not case_number or len(case_number) > 32:
        return None
    return session.scalars(select(Ticket).where(Ticket.case_number == case_number, visible(viewer))).first()


def public_messages(session: Session, ticket_id: int) -> list[Message]:
    """The case's messages a customer sees, oldest first, with their attachments."""
    return list(
        session.scalars(
            select(Message)
            .where(Message.ticket_id == ticket_id, _public_message())
            .options(selectinload(Message.attachments))
            .order_by(Message.created_at, Message.id)
        )
    )


def last_public_message_id(session: Session, ticket_id: int) -> list[str]:
    """The Message-IDs of the case's public mail, oldest first (a comment's References)."""
    return [
        m
        for m in session.scalars(
            select(Message.message_id)
            .where(Message.ticket_id == ticket_id, _public_message(), Message.message_id.is_not(None))
            .order_by(Message.created_at, Message.id)
        )
        if m
    ]


def attachment_for(session: Session, viewer: Viewer, case_number: str, attachment_id: int) -> AttachmentRow | None:
    """An attachment of a public inbound message of a case the viewer sees; else None."""
    return session.scalars(
        select(AttachmentRow)
        .join(Message, AttachmentRow.message_id == Message.id)
        .join(Ticket, Message.ticket_id == Ticket.id)
        .where(
            AttachmentRow.id == attachment_id,
            Ticket.case_number == case_number,
            visible(viewer),
            _public_message(),
        )
    ).first()


def linked_cases(session: Session, viewer: Viewer, ticket: Ticket) -> list[tuple[str, str, str]]:
    """(case number, subject, status) of the cases this one follows up or is followed up by, that
    the viewer may see."""
    cond = Ticket.linked_ticket_id == ticket.id
    if ticket.linked_ticket_id is not None:
        cond = or_(cond, Ticket.id == ticket.linked_ticket_id)
    rows = session.execute(
        select(Ticket.case_number, Ticket.subject, Ticket.status).where(cond, visible(viewer)).order_by(Ticket.id)
    ).all()
    return [tuple(r) for r in rows]


def participant_name(session: Session, address: str) -> str:
    """The display name a customer-side address was last seen with ("" when none)."""
    return (
        session.scalar(
            select(Participant.name)
            .where(Participant.email == address, Participant.role.in_(CUSTOMER_ROLES), Participant.name != "")
            .order_by(Participant.id.desc())
            .limit(1)
        )
        or ""
    )


def customer_language(session: Session, address: str) -> str | None:
    """The language of the address's latest case (what its mails were answered in)."""
    return session.scalar(
        select(Ticket.language).where(Ticket.requester_email == address).order_by(Ticket.id.desc()).limit(1)
    )


def known_address(session: Session, address: str) -> bool:
    """Whether ``address`` is a requester or a customer-side participant of some case."""
    return bool(
        session.scalar(select(exists().where(Ticket.requester_email == address)))
        or session.scalar(select(exists().where(Participant.email == address, Participant.role.in_(CUSTOMER_ROLES))))
    )


# ---------------------------------------------------------------- sign-in


def add_token(session: Session, token_hash: str, address: str, now: datetime, expires_at: datetime) -> None:
    session.add(SigninToken(token_hash=token_hash, address=address, created_at=now, expires_at=expires_at))
    session.flush()


def use_token(session: Session, token_hash: str, now: datetime) -> str | None:
    """Spend the token: its address when it exists, is unused and unexpired (one conditional
    UPDATE, so two clicks at once sign in once); else None."""
    address = session.scalar(select(SigninToken.address).where(SigninToken.token_hash == token_hash))
    if address is None:
        return None
    done = session.execute(
        update(SigninToken)
        .where(
            SigninToken.token_hash == token_hash,
            SigninToken.used_at.is_(None),
            SigninToken.expires_at > now,
        )
        .values(used_at=now)
    )
    return address if done.rowcount == 1 else None


def prune_signins(session: Session, before: datetime) -> int:
    """Delete sign-in requests made before ``before`` and sign-in links that expired before it;
    how many rows."""
    n = session.execute(delete(SigninRequest).where(SigninRequest.created_at < before)).rowcount or 0
    n += session.execute(delete(SigninToken).where(SigninToken.expires_at < before)).rowcount or 0
    return n


def add_signin_request(session: Session, address: str, client: str, now: datetime) -> None:
    session.add(SigninRequest(address=address, client=client[:64], created_at=now))
    session.flush()


def signin_requests_since(
    session: Session, since: datetime, *, address: str | None = None, client: str | None = None
) -> int:
    """How many sign-in mails were asked for since ``since`` for ``address`` or from ``client``."""
    cond = [SigninRequest.created_at > since]
    if address is not None:
        cond.append(SigninRequest.address == address)
    if client is not None:
        cond.append(SigninRequest.client == client[:64])
    return session.scalar(select(func.count()).select_from(SigninRequest).where(*cond)) or 0
