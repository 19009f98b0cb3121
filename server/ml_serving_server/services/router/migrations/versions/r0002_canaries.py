"""Canaries: the canaries, their audit trail, and the lease that lets one replica drive each.

Revision ID: r0002
Revises: r0001
Create Date: 2025-02-01
"""

from typing import Sequence, Union

from alembic import op

revision: str = "r0002"
down_revision: Union[str, Sequence[str], None] = "r0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # One row per canary, ever; `body` is the whole canary in the store's JSON format, the
    # columns what queries filter and order on. change_seq comes from router_change_seq, the
    # experiments' sequence: one order for every write. request_id is "" when the request gave
    # none; a non-empty one names at most one canary (StartCanary's retries).
    op.execute("""
        CREATE TABLE router_canaries (
            canary_id   text COLLATE "C" PRIMARY KEY,
            model_name  text NOT NULL,
            state       text NOT NULL
                        CHECK (state IN ('RUNNING', 'PAUSED', 'AWAITING_PROMOTION', 'PROMOTED', 'ROLLED_BACK')),
            revision    bigint NOT NULL CHECK (revision > 0),
            change_seq  bigint NOT NULL UNIQUE,
            create_time timestamptz NOT NULL,
            update_time timestamptz NOT NULL,
            request_id  text NOT NULL DEFAULT '',
            body        jsonb NOT NULL
        )""")
    op.execute("CREATE UNIQUE INDEX router_canaries_request_id ON router_canaries (request_id) "
               "WHERE request_id <> ''")
    # At most one active canary per model, whichever replica writes. (A canary against a
    # running experiment spans two tables: the store checks that under its writer lock.)
    op.execute("CREATE UNIQUE INDEX router_canaries_one_active ON router_canaries (model_name) "
               "WHERE state IN ('RUNNING', 'PAUSED', 'AWAITING_PROMOTION')")
    op.execute("CREATE INDEX router_canaries_newest ON router_canaries (create_time DESC, canary_id DESC)")
    op.execute("CREATE INDEX router_canaries_model_newest ON router_canaries "
               "(model_name, create_time DESC, canary_id DESC)")

    # The audit trail: events numbered 1, 2, ... per canary; `body` the whole event.
    op.execute("""
        CREATE TABLE router_canary_events (
            canary_id text COLLATE "C" NOT NULL REFERENCES router_canaries (canary_id),
            sequence  bigint NOT NULL CHECK (sequence > 0),
            body      jsonb NOT NULL,
            time      timestamptz NOT NULL,
            PRIMARY KEY (canary_id, sequence)
        )""")

    # Who drives an active canary, until when (the database's clock); deleted when it ends.
    op.execute("""
        CREATE TABLE router_canary_leases (
            canary_id  text COLLATE "C" PRIMARY KEY REFERENCES router_canaries (canary_id) ON DELETE CASCADE,
            holder     text NOT NULL,
            expires_at timestamptz NOT NULL
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS router_canary_leases")
    op.execute("DROP TABLE IF EXISTS router_canary_events")
    op.execute("DROP TABLE IF EXISTS router_canaries")
