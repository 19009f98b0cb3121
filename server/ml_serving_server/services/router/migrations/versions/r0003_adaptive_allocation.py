"""Adaptive allocation: weight changes made by the bandit, with the figures behind them.

Revision ID: r0003
Revises: r0002
Create Date: 2026-12-07
"""

from typing import Sequence, Union

from alembic import op

revision: str = "r0003"
down_revision: Union[str, Sequence[str], None] = "r0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_ACTIONS = "'CREATED', 'UPDATED', 'PAUSED', 'RESUMED', 'STOPPED'"


def upgrade() -> None:
    # figures: for REWEIGHTED, one object per variant (users, mean, probability of being the
    # best, weights before and after), in the store's JSON format; [] for every other action.
    op.execute("ALTER TABLE router_experiment_changes ADD COLUMN figures jsonb NOT NULL DEFAULT '[]'")
    op.execute("ALTER TABLE router_experiment_changes DROP CONSTRAINT router_experiment_changes_action_check")
    op.execute(f"""ALTER TABLE router_experiment_changes ADD CONSTRAINT router_experiment_changes_action_check
                   CHECK (action IN ({_ACTIONS}, 'REWEIGHTED'))""")


def downgrade() -> None:
    op.execute("DELETE FROM router_experiment_changes WHERE action = 'REWEIGHTED'")
    op.execute("ALTER TABLE router_experiment_changes DROP CONSTRAINT router_experiment_changes_action_check")
    op.execute(f"""ALTER TABLE router_experiment_changes ADD CONSTRAINT router_experiment_changes_action_check
                   CHECK (action IN ({_ACTIONS}))""")
    op.execute("ALTER TABLE router_experiment_changes DROP COLUMN figures")
