"""Indexes for the reports (issue 15): cases by creation time (the SLA and volume reports' periods),
events and mails by time (the history of a period), events by kind (the reopened cases of the
volume report).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tickets_created_at", "tickets", ["created_at"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index("ix_events_kind_ticket", "events", ["kind", "ticket_id"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at", table_name="messages")
    op.drop_index("ix_events_kind_ticket", table_name="events")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_index("ix_tickets_created_at", table_name="tickets")
