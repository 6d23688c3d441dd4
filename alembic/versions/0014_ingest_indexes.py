"""Indexes for the per-mail queries (issue 18: a long backlog is worked as fast as a short one): a
customer looked up by address among the cases' participants (status by mail, the case tracker's
sign-in and visibility) read the whole participants table.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ticket_participants_email", "ticket_participants", ["email"])


def downgrade() -> None:
    op.drop_index("ix_ticket_participants_email", table_name="ticket_participants")
