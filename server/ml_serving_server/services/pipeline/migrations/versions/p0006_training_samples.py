"""Training samples: what each successful retraining run trained on, per numeric feature.

Revision ID: p0006
Revises: p0005
Create Date: 2026-12-21
"""

from typing import Sequence, Union

from alembic import op

revision: str = "p0006"
down_revision: Union[str, Sequence[str], None] = "p0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # One row per (run, feature): the monitor reads one feature's sample of a model's newest run,
    # never a run's every sample at once (up to 10,000 doubles each). seq orders the runs of a model.
    op.execute("""
        CREATE TABLE pipeline_training_samples (
            run_id             uuid NOT NULL,
            feature            text NOT NULL,
            seq                bigserial NOT NULL,
            model_name         text NOT NULL,
            registered_version text NOT NULL DEFAULT '',
            stored_at          timestamptz NOT NULL,
            sample             double precision[] NOT NULL,
            PRIMARY KEY (run_id, feature)
        );
        -- The newest run of a model: its newest row.
        CREATE INDEX pipeline_training_samples_model ON pipeline_training_samples (model_name, seq);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE pipeline_training_samples")
