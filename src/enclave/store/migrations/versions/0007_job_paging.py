"""job paging: jobs listed a page at a time, newest first, per agency (issue 13)

* ``ix_jobs_agency_id_seq`` on ``jobs (agency_id, seq)``: a page of an agency's jobs, newest
  first (``ORDER BY seq DESC``, with ``seq < cursor``), is read by walking this index back
  from the cursor and stopping once the page is full, instead of sorting every job of the
  agency on each request.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_agency_id_seq", ["agency_id", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_agency_id_seq")
