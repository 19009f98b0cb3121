"""The lifecycle store: version stages, audit history, event feed, request ids, repair marks.

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

_STAGES = "('DEVELOPMENT', 'STAGING', 'PRODUCTION', 'ARCHIVED')"


def upgrade() -> None:
    # Every version's current stage (the lifecycle's state; MLflow's tags mirror it).
    op.execute(f"""
        CREATE TABLE registry_version_stages (
            model   text NOT NULL,
            version text NOT NULL,
            stage   text NOT NULL CHECK (stage IN {_STAGES}),
            since   timestamptz NOT NULL,
            PRIMARY KEY (model, version)
        )""")

    # The audit history. `position` orders entries written at the same instant (a promotion
    # archives the old Production version and promotes the new one with one time).
    op.execute(f"""
        CREATE TABLE registry_transitions (
            position      bigserial PRIMARY KEY,
            transition_id text COLLATE "C" NOT NULL UNIQUE,
            model         text NOT NULL,
            version       text NOT NULL,
            from_stage    text NOT NULL CHECK (from_stage IN {_STAGES}),
            to_stage      text NOT NULL CHECK (to_stage IN {_STAGES}),
            actor         text NOT NULL,
            reason        text NOT NULL,
            time          timestamptz NOT NULL,
            override      boolean NOT NULL DEFAULT false,
            gate_results  jsonb NOT NULL DEFAULT '[]'::jsonb,
            caused_by     text NOT NULL DEFAULT ''
        )""")
    op.execute("CREATE INDEX registry_transitions_model_time ON registry_transitions "
               "(model, time DESC, transition_id DESC)")
    op.execute("CREATE INDEX registry_transitions_time ON registry_transitions (time DESC, transition_id DESC)")
    op.execute("CREATE INDEX registry_transitions_production ON registry_transitions (model, time DESC, position DESC) "
               "WHERE from_stage = 'PRODUCTION' OR to_stage = 'PRODUCTION'")

    # The event feed: sequences come from registry_event_head, gap-free and committed in order.
    op.execute("""
        CREATE TABLE registry_events (
            sequence bigint PRIMARY KEY,
            type     text NOT NULL,
            time     timestamptz NOT NULL,
            model    text NOT NULL,
            version  text NOT NULL DEFAULT '',
            payload  jsonb NOT NULL
        )""")
    op.execute("CREATE INDEX registry_events_model ON registry_events (model, sequence)")
    op.execute("""
        CREATE TABLE registry_event_head (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            head      bigint NOT NULL
        )""")
    op.execute("INSERT INTO registry_event_head (singleton, head) VALUES (true, 0)")

    # CreateModelVersion's idempotency: request id -> the version it created.
    op.execute("""
        CREATE TABLE registry_request_ids (
            model      text NOT NULL,
            request_id text NOT NULL,
            version    text NOT NULL,
            created    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model, request_id)
        )""")

    # Models whose MLflow state may differ from the stored lifecycle (a write failed halfway).
    op.execute("""
        CREATE TABLE registry_needs_repair (
            model text PRIMARY KEY,
            since timestamptz NOT NULL DEFAULT now()
        )""")


def downgrade() -> None:
    for table in ("registry_needs_repair", "registry_request_ids", "registry_event_head", "registry_events",
                  "registry_transitions", "registry_version_stages"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
