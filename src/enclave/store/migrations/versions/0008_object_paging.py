"""paging of artifacts, datasets, models, transfers and endpoints (issue 13)

* ``(agency_id, label, created_at, id)`` on ``artifacts``, ``models`` and ``endpoints``, and
  ``(agency_id, source_label, created_at, id)`` on ``transfers``: a page of an agency's objects
  at the labels a session may read (one index range per label, newest first, after a cursor)
  and its total are read from the rows at those labels only, as 0007 did for jobs. The rows
  above the session are never read, so the time of the answer does not depend on them.
* ``(agency_id, kind, label, created_at, id)`` on ``artifacts``: the same for one kind
  (datasets).
* ``shares.label``: the label of the shared artifact (labels never change), filled in for the
  shares there are, and ``(agency_id, label, object_id)``: the artifacts shared with an agency
  are read one label at a time too, never those shared with it above the session.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = {
    "artifacts": {
        "ix_artifacts_agency_id_label_created_at": ["agency_id", "label", "created_at", "id"],
        "ix_artifacts_agency_id_kind_label_created_at": ["agency_id", "kind", "label", "created_at", "id"],
    },
    "models": {"ix_models_agency_id_label_created_at": ["agency_id", "label", "created_at", "id"]},
    "endpoints": {"ix_endpoints_agency_id_label_created_at": ["agency_id", "label", "created_at", "id"]},
    "transfers": {
        "ix_transfers_agency_id_source_label_created_at": ["agency_id", "source_label", "created_at", "id"]
    },
}


def upgrade() -> None:
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=256), nullable=True))
    op.execute(
        "UPDATE shares SET label = (SELECT artifacts.label FROM artifacts WHERE artifacts.id = shares.object_id)"
    )
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.create_index("ix_shares_agency_id_label", ["agency_id", "label", "object_id"], unique=False)
    for table, indexes in INDEXES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, columns in indexes.items():
                batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, indexes in INDEXES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in indexes:
                batch_op.drop_index(name)
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.drop_index("ix_shares_agency_id_label")
        batch_op.drop_column("label")
