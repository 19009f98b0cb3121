"""The experiment store: experiments, their change history, the global change sequence.

Revision ID: r0001
Revises:
Create Date: 2025-01-01
"""

from typing import Sequence, Union

from alembic import op

revision: str = "r0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Every write sets the experiment's change_seq to nextval: the change feed's order.
    op.execute("CREATE SEQUENCE router_change_seq AS bigint")

    # One row per experiment, ever (names are never reused); `body` is the whole experiment in
    # the store's JSON format, the columns what queries filter and order on.
    op.execute("""
        CREATE TABLE router_experiments (
            name        text COLLATE "C" PRIMARY KEY,
            model_name  text NOT NULL,
            state       text NOT NULL CHECK (state IN ('RUNNING', 'PAUSED', 'STOPPED')),
            revision    bigint NOT NULL CHECK (revision > 0),
            change_seq  bigint NOT NULL UNIQUE,
            create_time timestamptz NOT NULL,
            update_time timestamptz NOT NULL,
            body        jsonb NOT NULL
        )""")
    # At most one running experiment per model, whichever replica writes.
    op.execute("CREATE UNIQUE INDEX router_experiments_one_running ON router_experiments (model_name) "
               "WHERE state = 'RUNNING'")
    op.execute("CREATE INDEX router_experiments_newest ON router_experiments (create_time DESC, name DESC)")
    op.execute("CREATE INDEX router_experiments_model_newest ON router_experiments "
               "(model_name, create_time DESC, name DESC)")

    # The history: one row per revision, `after` the experiment as that write stored it.
    op.execute("""
        CREATE TABLE router_experiment_changes (
            experiment text COLLATE "C" NOT NULL REFERENCES router_experiments (name),
            revision   bigint NOT NULL,
            action     text NOT NULL CHECK (action IN ('CREATED', 'UPDATED', 'PAUSED', 'RESUMED', 'STOPPED')),
            actor      text NOT NULL,
            reason     text NOT NULL,
            fields     text[] NOT NULL,
            time       timestamptz NOT NULL,
            after      jsonb,
            PRIMARY KEY (experiment, revision)
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS router_experiment_changes")
    op.execute("DROP TABLE IF EXISTS router_experiments")
    op.execute("DROP SEQUENCE IF EXISTS router_change_seq")
