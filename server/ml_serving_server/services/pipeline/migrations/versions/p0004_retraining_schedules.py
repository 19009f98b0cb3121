"""Retraining schedules: a cron per model that queues runs.

Revision ID: p0004
Revises: p0003
Create Date: 2026-12-07
"""

from typing import Sequence, Union

from alembic import op

revision: str = "p0004"
down_revision: Union[str, Sequence[str], None] = "p0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE pipeline_retraining_schedules (
            schedule_id    uuid PRIMARY KEY,
            seq            bigserial NOT NULL UNIQUE,
            model_name     text NOT NULL,
            cron           text NOT NULL,
            time_zone      text NOT NULL DEFAULT '',
            parameters     jsonb NOT NULL DEFAULT '{}',
            reason         text NOT NULL DEFAULT '',
            enabled        boolean NOT NULL,
            jitter_seconds integer NOT NULL DEFAULT 0,
            created_by     text NOT NULL DEFAULT '',
            create_time    timestamptz NOT NULL,
            next_run_time  timestamptz NOT NULL,
            last_run_time  timestamptz,
            last_run_id    text NOT NULL DEFAULT ''
        );
        CREATE INDEX pipeline_retraining_schedules_due
            ON pipeline_retraining_schedules (next_run_time) WHERE enabled;
    """)


def downgrade() -> None:
    op.execute("DROP TABLE pipeline_retraining_schedules")
