"""authority: two-person clearance changes, worker credentials bound to one worker name

* ``clearance_requests``: a raise of a user's clearance waits here for a second admin
  (issue 12, authority); lowerings are recorded as applied at once.
* ``worker_credentials.worker``: the one worker name a credential acts as (given when it is
  issued, or bound by its first sync). A live credential's name is unique within its region
  (a partial unique index: revoked credentials keep their name, so one can be replaced).
  Credentials made before this revision are unbound: their next sync binds them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clearance_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("from_clearance", sa.String(length=256), nullable=False),
        sa.Column("to_clearance", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("clearance_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clearance_requests_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_clearance_requests_state"), ["state"], unique=False)

    with op.batch_alter_table("worker_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=128), nullable=True))
        batch_op.create_index(
            "uq_worker_credentials_live_worker",
            ["region", "worker"],
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("worker_credentials", schema=None) as batch_op:
        batch_op.drop_index("uq_worker_credentials_live_worker")
        batch_op.drop_column("worker")
    with op.batch_alter_table("clearance_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clearance_requests_state"))
        batch_op.drop_index(batch_op.f("ix_clearance_requests_user_id"))
    op.drop_table("clearance_requests")
