"""job and audit paging, id prefixes (issue 13)

* ``ix_jobs_agency_id_label_seq`` on ``jobs (agency_id, label, seq)``: a page of an agency's
  jobs at the labels a session may read (``label IN (...)``, newest first, ``seq < cursor``)
  and its total are read from the rows at those labels only: the jobs at labels above the
  session are never read, so the time of the answer does not depend on them.
* ``ix_audit_records_object_label_seq`` and ``..._object_label_event_seq``: the same for the
  audit log, per object label (with or without an event filter).
* ``ix_jobs_id_prefix`` and ``ix_jobs_array_id_prefix``: a short id prefix
  (``WHERE id LIKE 'abcd%'``) is found by a range scan of the rows that start with it, not by
  reading every job of the agency (whose count, at labels the session cannot read, would
  show in the time of the answer). PostgreSQL needs ``varchar_pattern_ops`` for LIKE to use
  an index whatever the database's collation; SQLite's LIKE is case-insensitive, so it uses
  a ``NOCASE`` index.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

AUDIT_INDEXES = {
    "ix_audit_records_object_label_seq": ["object_label", "seq"],
    "ix_audit_records_object_label_event_seq": ["object_label", "event", "seq"],
}
PREFIX_INDEXES = {"ix_jobs_id_prefix": "id", "ix_jobs_array_id_prefix": "array_id"}


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_agency_id_label_seq", ["agency_id", "label", "seq"], unique=False)
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        for name, columns in AUDIT_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    dialect = op.get_bind().dialect.name
    for name, column in PREFIX_INDEXES.items():
        if dialect == "postgresql":
            op.create_index(name, "jobs", [column], postgresql_ops={column: "varchar_pattern_ops"})
        elif dialect == "sqlite":
            op.create_index(name, "jobs", [sa.text(f"{column} COLLATE NOCASE")])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        for name in PREFIX_INDEXES:
            op.drop_index(name, table_name="jobs")
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        for name in AUDIT_INDEXES:
            batch_op.drop_index(name)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_agency_id_label_seq")
