"""Deadlines on tickets: when the first response and the resolution are due (indexed for the
escalation job).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_response_due", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolution_due", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_tickets_first_response_due", ["first_response_due"], unique=False)
        batch_op.create_index("ix_tickets_resolution_due", ["resolution_due"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_resolution_due")
        batch_op.drop_index("ix_tickets_first_response_due")
        batch_op.drop_column("resolution_due")
        batch_op.drop_column("first_response_due")
