"""Conversations: ticket lifecycle times, severity, assignee and the linked earlier case; the
participants of a case; per message the new text, its kind, flags for agents and Outlook's
Thread-Index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # batch mode: SQLite cannot add a foreign key with ALTER TABLE; Alembic rebuilds the table there.
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("severity", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("assignee", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("solved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reply_to", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("linked_ticket_id", _ID, nullable=True))
        batch_op.create_foreign_key("fk_tickets_linked_ticket_id", "tickets", ["linked_ticket_id"], ["id"])
        batch_op.create_index("ix_tickets_status_solved_at", ["status", "solved_at"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_new", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("kind", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("flags", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("thread_index", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    # Messages from before this revision: outbound ones take the kind of their outbox row, inbound
    # ones of a ticket were the customer's (so relays find the conversation they continue).
    op.execute(
        "UPDATE messages SET kind = (SELECT outbox.kind FROM outbox WHERE outbox.id = messages.outbox_id) "
        "WHERE direction = 'out' AND outbox_id IS NOT NULL"
    )
    op.execute("UPDATE messages SET kind = 'customer' WHERE direction = 'in' AND ticket_id IS NOT NULL")

    op.create_table(
        "ticket_participants",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("ticket_id", _ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "email", name="uq_ticket_participants_email"),
    )


def downgrade() -> None:
    op.drop_table("ticket_participants")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("thread_index")
        batch_op.drop_column("flags")
        batch_op.drop_column("kind")
        batch_op.drop_column("body_new")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_status_solved_at")
        batch_op.drop_constraint("fk_tickets_linked_ticket_id", type_="foreignkey")
        batch_op.drop_column("linked_ticket_id")
        batch_op.drop_column("reply_to")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("solved_at")
        batch_op.drop_column("first_response_at")
        batch_op.drop_column("assignee")
        batch_op.drop_column("severity")
