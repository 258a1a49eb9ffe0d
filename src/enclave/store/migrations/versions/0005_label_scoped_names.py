"""label-scoped names: idempotency keys, versions, endpoint names and gateway usage per label

Everything a session can observe about names must depend only on objects it may read
(issue 12, information flow). So the unique rules that decide "taken", "next version" and
"the job this key made" are scoped by label as well as by agency:

* ``jobs``: an idempotency key is unique per (owner, agency, label);
* ``artifacts``: a version is unique per (agency, kind, name, label);
* ``models``: a version is unique per (agency, name, label);
* ``endpoints``: a name is unique per (agency, label);
* ``gateway_usage``: the daily ledger gets a ``label`` (usage is metered per label). Rows
  from before this revision carry no label: they get the marking ``""`` (unknown), which
  the services count only for a session at the scheme's top label (fail closed).

The old constraints were created without names; PostgreSQL named them
``<table>_<columns>_key``, SQLite keeps them unnamed (dropped here through a naming
convention that batch mode applies to the reflected table).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}

# (table, old columns, old name if it had one, new name, new columns)
_UNIQUES = (
    ("jobs", ["owner_id", "idempotency_key"], None, "uq_jobs_idempotency",
     ["owner_id", "agency_id", "label", "idempotency_key"]),
    ("artifacts", ["agency_id", "kind", "name", "version"], "uq_artifacts_version", "uq_artifacts_version",
     ["agency_id", "kind", "name", "label", "version"]),
    ("models", ["agency_id", "name", "version"], None, "uq_models_version",
     ["agency_id", "name", "label", "version"]),
    ("endpoints", ["agency_id", "name"], None, "uq_endpoints_name", ["agency_id", "label", "name"]),
)  # fmt: skip


def _existing_name(table: str, columns: list[str], named: str | None) -> str:
    """The name to drop: the constraint's own (PostgreSQL, or a named one), else the
    naming convention's (an unnamed SQLite constraint, as batch mode reflects it)."""
    if named is not None:
        return named
    for uq in sa.inspect(op.get_bind()).get_unique_constraints(table):
        if list(uq["column_names"]) == columns and uq.get("name"):
            return str(uq["name"])
    return f"uq_{table}_{'_'.join(columns)}"


def _swap(table: str, old: list[str], old_name: str | None, new_name: str, new: list[str]) -> None:
    drop = _existing_name(table, old, old_name)
    with op.batch_alter_table(table, naming_convention=_CONVENTION) as batch_op:
        batch_op.drop_constraint(drop, type_="unique")
        batch_op.create_unique_constraint(new_name, new)


def _usage_table(name: str, labelled: bool) -> None:
    columns = [
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
    ]
    if labelled:
        columns.append(sa.Column("label", sa.String(length=256), nullable=False))
    op.create_table(
        name,
        *columns,
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("energy_j", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("agency_id", "day", *(["label"] if labelled else [])),
    )


_COPY_UP = (
    "INSERT INTO gateway_usage_by_label"
    " (agency_id, day, label, requests, prompt_tokens, completion_tokens, energy_j)"
    " SELECT agency_id, day, '', requests, prompt_tokens, completion_tokens, energy_j FROM gateway_usage"
)
_COPY_DOWN = (
    "INSERT INTO gateway_usage_by_agency"
    " (agency_id, day, requests, prompt_tokens, completion_tokens, energy_j)"
    " SELECT agency_id, day, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(energy_j)"
    " FROM gateway_usage GROUP BY agency_id, day"
)


def upgrade() -> None:
    for table, old, old_name, new_name, new in _UNIQUES:
        _swap(table, old, old_name, new_name, new)
    _usage_table("gateway_usage_by_label", labelled=True)
    op.execute(_COPY_UP)
    op.drop_table("gateway_usage")
    op.rename_table("gateway_usage_by_label", "gateway_usage")


def downgrade() -> None:
    _usage_table("gateway_usage_by_agency", labelled=False)
    op.execute(_COPY_DOWN)
    op.drop_table("gateway_usage")
    op.rename_table("gateway_usage_by_agency", "gateway_usage")
    for table, old, old_name, new_name, _new in reversed(_UNIQUES):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(new_name, type_="unique")
            batch_op.create_unique_constraint(old_name or f"uq_{table}_{'_'.join(old)}", old)
