"""The decision log: every selection with its propensities, and the rewards of its decisions.

Revision ID: b0001
Revises:
Create Date: 2026-12-07
"""

from typing import Sequence, Union

from alembic import op

revision: str = "b0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Arms are positions in the bandit's definition (arms are only ever appended), as smallints:
    # a decision offering 100 arms costs 200 bytes, not 100 names. `key` is a digest of the
    # decision id (ids run to kilobytes). incarnation tells a bandit from a re-created one.
    op.execute("""
        CREATE TABLE bandit_decisions (
            bandit               text NOT NULL,
            incarnation          bigint NOT NULL,
            decided_at           timestamptz NOT NULL,
            key                  bytea NOT NULL,
            decision_id          text NOT NULL,
            user_id              text NOT NULL,
            policy               text NOT NULL,
            offered              smallint[] NOT NULL,
            chosen               smallint[] NOT NULL,
            scores               double precision[] NOT NULL,
            propensity           double precision NOT NULL,
            choice_probabilities double precision[] NOT NULL,
            context              double precision[] NOT NULL,
            PRIMARY KEY (bandit, incarnation, decided_at, key)
        );
        -- Retention deletes by time, across bandits.
        CREATE INDEX bandit_decisions_decided_at ON bandit_decisions (decided_at);

        -- id: random per reward, so a batch written again after a lost acknowledgement counts once.
        CREATE TABLE bandit_decision_rewards (
            id          bigint PRIMARY KEY,
            bandit      text NOT NULL,
            incarnation bigint NOT NULL,
            key         bytea NOT NULL,
            arm         smallint NOT NULL,
            reward      double precision NOT NULL,
            rewarded_at timestamptz NOT NULL
        );
        CREATE INDEX bandit_decision_rewards_decision ON bandit_decision_rewards (bandit, incarnation, key);
        CREATE INDEX bandit_decision_rewards_rewarded_at ON bandit_decision_rewards (rewarded_at);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE bandit_decision_rewards; DROP TABLE bandit_decisions")
