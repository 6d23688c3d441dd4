"""Loop and noise protection: the class of every inbound mail, the addresses our mail bounced from
(hard bounces suppress automatic mail for a while), and the automatic mails per recipient that the
tiered limits count.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("raw_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mail_class", sa.String(length=24), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mail_class", sa.String(length=24), nullable=True))
    op.create_table(
        "address_health",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("permanent", sa.Boolean(), nullable=False),
        sa.Column("bounces", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=True),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suppressed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ticket_id", _ID, nullable=True),
        sa.ForeignKeyConstraint(["last_ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("email"),
    )
    op.create_table(
        "auto_mails",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("ticket_id", _ID, nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auto_mails_recipient_created", "auto_mails", ["recipient", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_auto_mails_recipient_created", table_name="auto_mails")
    op.drop_table("auto_mails")
    op.drop_table("address_health")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("mail_class")
    with op.batch_alter_table("raw_messages", schema=None) as batch_op:
        batch_op.drop_column("mail_class")
