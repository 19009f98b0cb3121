"""The feature store's materialisation state: one row per view (watermark, definition) and the jobs.

Revision ID: p0001
Revises:
Create Date: 2026-12-07
"""

from typing import Sequence, Union

from alembic import op

revision: str = "p0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # What is materialised of each view: the largest event time written (the watermark) and the
    # definition it was computed with (another definition: the next run is FULL).
    op.execute("""
        CREATE TABLE pipeline_feature_view_state (
            feature_view              text COLLATE "C" PRIMARY KEY,
            definition_hash           text NOT NULL,
            materialized_until        timestamptz,
            last_materialization_time timestamptz
        )""")
    # One row per materialisation job; `seq` orders a view's jobs, `resume_after` (the last key of
    # the last batch written, as text) is the progress a stopped job leaves for the next one.
    op.execute("""
        CREATE TABLE pipeline_materialization_jobs (
            job_id           uuid PRIMARY KEY,
            seq              bigserial NOT NULL UNIQUE,
            feature_view     text COLLATE "C" NOT NULL,
            mode             text NOT NULL CHECK (mode IN ('INCREMENTAL', 'FULL')),
            state            text NOT NULL CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED')),
            definition_hash  text NOT NULL,
            create_time      timestamptz NOT NULL,
            start_time       timestamptz,
            end_time         timestamptz,
            window_start     timestamptz,
            window_end       timestamptz,
            entities_total   bigint NOT NULL DEFAULT 0,
            entities_written bigint NOT NULL DEFAULT 0,
            resume_after     text,
            resumed_job_id   text NOT NULL DEFAULT '',
            error_code       text,
            error_reason     text,
            error_message    text
        )""")
    op.execute("CREATE INDEX pipeline_materialization_jobs_view ON pipeline_materialization_jobs (feature_view, seq)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS pipeline_materialization_jobs")
    op.execute("DROP TABLE IF EXISTS pipeline_feature_view_state")
