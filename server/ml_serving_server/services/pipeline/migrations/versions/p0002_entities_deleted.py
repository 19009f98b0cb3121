"""A job's count of online entities it deleted (a FULL run removes those no longer in the source).

Revision ID: p0002
Revises: p0001
Create Date: 2026-12-07
"""

from typing import Sequence, Union

from alembic import op

revision: str = "p0002"
down_revision: Union[str, Sequence[str], None] = "p0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("ALTER TABLE pipeline_materialization_jobs ADD COLUMN entities_deleted bigint NOT NULL DEFAULT 0")


def downgrade() -> None:
    op.execute("ALTER TABLE pipeline_materialization_jobs DROP COLUMN entities_deleted")
