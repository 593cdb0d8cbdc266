"""A grant's request id (its idempotency key, AdminService.GrantBeneficiaryResolutions'
``request_id``): the operator's retry of a grant whose answer was lost finds the grant it made
instead of making a second one (docs/privacy.md, "A person asking for tokens"). Unique where
present, so two calls with one id at once make one grant (the loser's insert collides and is
answered as a repeat). Grants made before this revision keep a null request id: the table stays
append-only (0019), and adding a nullable column changes no row.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_TABLE = "beneficiary_resolution_grants"
_INDEX = "beneficiary_resolution_grants_by_request_id"


def upgrade() -> None:
    # Plain ALTER TABLE on both engines (no batch copy on SQLite, which would drop the
    # append-only triggers); a unique index treats nulls as distinct on both engines, so the
    # grants made before this revision all keep a null id.
    op.add_column(_TABLE, sa.Column("request_id", sa.String(128), nullable=True))
    op.create_index(_INDEX, _TABLE, ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    op.drop_column(_TABLE, "request_id")
