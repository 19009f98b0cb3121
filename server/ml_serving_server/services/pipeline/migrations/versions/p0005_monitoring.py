"""The model monitor: recorded metric values, alert rules, their evaluation state, alerts.

Revision ID: p0005
Revises: p0004
Create Date: 2026-12-14
"""

from typing import Sequence, Union

from alembic import op

revision: str = "p0005"
down_revision: Union[str, Sequence[str], None] = "p0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Values arrive by the ten thousand (binary COPY), so every index here costs ingestion: two
    # B-trees and a BRIN. No primary key (nothing addresses one value) and no GIN on labels: the
    # evaluator's label filter (`labels @>`) only sifts the rows of one model's metric in one
    # window, which the series index already narrows to. The indexed text columns compare bytewise
    # (COLLATE "C"): they are only ever matched for equality, and a locale's collation would make
    # every index insert slower.
    op.execute("""
        CREATE TABLE pipeline_metric_values (
            model_name    text COLLATE "C" NOT NULL,
            metric_name   text COLLATE "C" NOT NULL,
            model_version text NOT NULL DEFAULT '',
            time          timestamptz NOT NULL,
            value         double precision NOT NULL,
            labels        jsonb NOT NULL DEFAULT '{}',
            event_id      text COLLATE "C"
        );
        -- The evaluator's read: one model's metric in [start, end), newest first.
        CREATE INDEX pipeline_metric_values_series
            ON pipeline_metric_values (model_name, metric_name, time);
        -- Idempotency: an event id is recorded once per model and metric (one request's latency and
        -- accuracy may share it); values without one are not indexed here.
        CREATE UNIQUE INDEX pipeline_metric_values_event
            ON pipeline_metric_values (model_name, metric_name, event_id) WHERE event_id IS NOT NULL;
        -- For a retention sweep (DELETE ... WHERE time < cutoff) across every series. BRIN: a few
        -- pages for the whole table and next to nothing per insert (a B-tree on time would cost
        -- ingestion a quarter), as values arrive roughly in time order. A page range serves only
        -- once summarised: autosummarize has autovacuum do it as each range fills.
        CREATE INDEX pipeline_metric_values_time ON pipeline_metric_values USING brin (time)
            WITH (autosummarize = on);
    """)
    # Durations are microseconds (bigint, and integers in the condition's JSON): exactly a
    # timedelta's resolution, so they read back equal.
    op.execute("""
        CREATE TABLE pipeline_alert_rules (
            rule_id               uuid PRIMARY KEY,
            seq                   bigserial NOT NULL UNIQUE,
            name                  text NOT NULL CONSTRAINT pipeline_alert_rules_name UNIQUE,
            description           text NOT NULL DEFAULT '',
            model_name            text NOT NULL,
            model_version         text NOT NULL DEFAULT '',
            metric_name           text NOT NULL,
            label_filter          jsonb NOT NULL DEFAULT '{}',
            condition             jsonb NOT NULL,  -- {"kind": "threshold" | "degradation" | "drift", ...}
            window_us             bigint NOT NULL,
            aggregation           text NOT NULL,
            for_duration_us       bigint NOT NULL,
            min_samples           integer NOT NULL,
            severity              text NOT NULL,
            webhook_url           text NOT NULL DEFAULT '',
            trigger_retraining    boolean NOT NULL,
            retraining_parameters jsonb NOT NULL DEFAULT '{}',
            enabled               boolean NOT NULL,
            create_time           timestamptz NOT NULL,
            update_time           timestamptz NOT NULL
        );
        CREATE INDEX pipeline_alert_rules_model ON pipeline_alert_rules (model_name, seq);
        -- Goes with its rule: a state saved for a rule deleted meanwhile is refused, not orphaned.
        CREATE TABLE pipeline_alert_rule_state (
            rule_id       uuid PRIMARY KEY REFERENCES pipeline_alert_rules ON DELETE CASCADE,
            pending_since timestamptz
        );
    """)
    # Alerts outlive their rule (history), hence no foreign key.
    op.execute("""
        CREATE TABLE pipeline_alerts (
            alert_id             uuid PRIMARY KEY,
            seq                  bigserial NOT NULL UNIQUE,
            rule_id              uuid NOT NULL,
            rule_name            text NOT NULL,
            model_name           text NOT NULL,
            model_version        text NOT NULL DEFAULT '',
            metric_name          text NOT NULL,
            state                text NOT NULL,
            severity             text NOT NULL,
            value                double precision NOT NULL,
            reference_value      double precision NOT NULL,
            message              text NOT NULL DEFAULT '',
            fire_time            timestamptz NOT NULL,
            last_evaluation_time timestamptz NOT NULL,
            resolve_time         timestamptz,
            retraining_run_id    text NOT NULL DEFAULT ''
        );
        -- At most one firing alert per rule: concurrent evaluators cannot open a second one.
        CREATE UNIQUE INDEX pipeline_alerts_one_firing ON pipeline_alerts (rule_id) WHERE state = 'FIRING';
        CREATE INDEX pipeline_alerts_rule ON pipeline_alerts (rule_id, seq);
        CREATE INDEX pipeline_alerts_model ON pipeline_alerts (model_name, seq);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE pipeline_alerts, pipeline_alert_rule_state, pipeline_alert_rules, pipeline_metric_values")
