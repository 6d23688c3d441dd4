"""The customers' case tracker (``mailbridge web``): sign-in tokens (random, stored as their
SHA-256, valid 15 minutes, single use, bound to one address) and the sign-in requests the rate
limits count (per address and per client address).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signin_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "signin_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_signin_requests_address", "signin_requests", ["address", "created_at"])
    op.create_index("ix_signin_requests_client", "signin_requests", ["client", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_signin_requests_client", table_name="signin_requests")
    op.drop_index("ix_signin_requests_address", table_name="signin_requests")
    op.drop_table("signin_requests")
    op.drop_table("signin_tokens")
