"""Retraining runs: queued by triggers, claimed by workers, fenced by (worker, attempt).

Revision ID: p0003
Revises: p0002
Create Date: 2026-12-07
"""

from typing import Sequence, Union

from alembic import op

revision: str = "p0003"
down_revision: Union[str, Sequence[str], None] = "p0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE pipeline_retraining_runs (
            run_id             uuid PRIMARY KEY,
            seq                bigserial NOT NULL UNIQUE,
            model_name         text NOT NULL,
            state              text NOT NULL,
            trigger            text NOT NULL,
            reason             text NOT NULL DEFAULT '',
            parameters         jsonb NOT NULL DEFAULT '{}',
            schedule_id        text NOT NULL DEFAULT '',
            alert_id           text NOT NULL DEFAULT '',
            idempotency_key    text,
            attempt            integer NOT NULL DEFAULT 0,
            max_attempts       integer NOT NULL,
            worker_id          text NOT NULL DEFAULT '',
            create_time        timestamptz NOT NULL,
            start_time         timestamptz,
            end_time           timestamptz,
            heartbeat_time     timestamptz,
            progress           double precision NOT NULL DEFAULT 0,
            stage              text NOT NULL DEFAULT '',
            cancel_requested   boolean NOT NULL DEFAULT false,
            metrics            jsonb NOT NULL DEFAULT '{}',
            mlflow_run_id      text NOT NULL DEFAULT '',
            registered_version text NOT NULL DEFAULT '',
            error_reason       text,
            error_message      text,
            error_code         text
        );
        -- A trigger's idempotency key is one run per model.
        CREATE UNIQUE INDEX pipeline_retraining_runs_idempotency
            ON pipeline_retraining_runs (model_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
        -- At most one run per model triggered by an alert is queued or running.
        CREATE UNIQUE INDEX pipeline_retraining_runs_one_alert_run
            ON pipeline_retraining_runs (model_name) WHERE trigger = 'ALERT' AND state IN ('QUEUED', 'RUNNING');
        -- What workers claim and the sweeper looks at.
        CREATE INDEX pipeline_retraining_runs_active
            ON pipeline_retraining_runs (state, seq) WHERE state IN ('QUEUED', 'RUNNING');
        CREATE INDEX pipeline_retraining_runs_model ON pipeline_retraining_runs (model_name, seq);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE pipeline_retraining_runs")
