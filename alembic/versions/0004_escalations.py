"""The SLA clocks on tickets: organisation and contract, the follow-up clock, pauses while pending,
and when the escalation job next has to look at the case (indexed: the job reads only due cases).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organisation", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("contract", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("update_due", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_answer_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("update_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("paused_seconds", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_escalation_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_tickets_update_due", ["update_due"], unique=False)
        batch_op.create_index("ix_tickets_next_escalation_at", ["next_escalation_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_next_escalation_at")
        batch_op.drop_index("ix_tickets_update_due")
        for col in (
            "next_escalation_at",
            "paused_seconds",
            "paused_at",
            "update_started_at",
            "last_answer_at",
            "update_due",
            "contract",
            "organisation",
        ):
            batch_op.drop_column(col)
