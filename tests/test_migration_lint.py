"""Every migration after the baseline keeps the rules of ``store.migration_lint``: no long
lock on a big table, nothing removed that the release before still uses. The lint must be
able to fail: each bad sample below is flagged for its reason, the good ones are not, and
the baseline's own lock-heavy migrations (written before the rules) are flagged."""

from __future__ import annotations

import pytest

from store import sql
from store.migration_lint import lint

NEXT = sql.BASELINE + 1
EXPAND = "-- turnstore: expand\n"
CONTRACT = f"-- turnstore: contract, code from {sql.BASELINE}\n"
NO_TX = "-- turnstore: no-transaction\n"


def _m(text: str, version: int = NEXT, name: str = "sample") -> sql.Migration:
    return sql.Migration(version, name, text)


def _rules(*migrations: sql.Migration) -> list[str]:
    return [f.rule for f in lint(migrations, queries="SELECT * FROM turnstore_turns")]


def test_every_migration_after_the_baseline_keeps_the_rules() -> None:
    findings = lint(sql.migrations("postgres"))
    assert findings == [], "\n".join(map(str, findings))


def test_both_dialects_declare_the_same_kind_for_each_migration() -> None:
    for lite, pg in zip(sql.migrations("sqlite"), sql.migrations("postgres"), strict=True):
        assert (lite.kind, lite.code_from) == (pg.kind, pg.code_from), pg.name


BAD = {
    "index without concurrently": (
        EXPAND + "CREATE INDEX turnstore_turns_by_owner ON turnstore_turns (lease_owner);",
        "CREATE INDEX on an existing table without CONCURRENTLY",
    ),
    "unique index without concurrently": (
        EXPAND + "CREATE UNIQUE INDEX x ON ONLY turnstore_messages (conversation_id, step);",
        "CREATE INDEX on an existing table without CONCURRENTLY",
    ),
    "concurrently inside a transaction": (
        EXPAND + "CREATE INDEX CONCURRENTLY IF NOT EXISTS x ON turnstore_turns (error);",
        "CONCURRENTLY cannot run in a transaction",
    ),
    "a no-transaction statement that cannot be repeated": (
        EXPAND + NO_TX + "CREATE INDEX CONCURRENTLY x ON turnstore_turns (error);",
        "a no-transaction migration holds only",
    ),
    "other statements in a no-transaction migration": (
        EXPAND + NO_TX + "ALTER TABLE turnstore_turns ADD COLUMN note text;",
        "a no-transaction migration holds only",
    ),
    "foreign key validated at once": (
        EXPAND + "ALTER TABLE turnstore_usage ADD CONSTRAINT u_fk FOREIGN KEY "
        "(conversation_id) REFERENCES turnstore_conversations (id);",
        "ADD FOREIGN KEY on an existing table without NOT VALID",
    ),
    "check validated at once": (
        EXPAND + "ALTER TABLE turnstore_turns ADD CHECK (steps < 100000);",
        "ADD CHECK on an existing table without NOT VALID",
    ),
    "new column referencing another table": (
        EXPAND + "ALTER TABLE turnstore_turns ADD COLUMN parent text "
        "REFERENCES turnstore_turns (id);",
        "a new column REFERENCES another table",
    ),
    "validated in the same migration": (
        EXPAND + "ALTER TABLE turnstore_turns ADD CONSTRAINT c CHECK (steps >= 0) NOT VALID;\n"
        "ALTER TABLE turnstore_turns VALIDATE CONSTRAINT c;",
        "VALIDATE in the migration that adds the constraint",
    ),
    "column type change": (
        EXPAND + "ALTER TABLE turnstore_turns ALTER COLUMN steps TYPE bigint;",
        "ALTER COLUMN ... TYPE rewrites the table",
    ),
    "set data type": (
        EXPAND + "ALTER TABLE turnstore_turns ALTER steps SET DATA TYPE bigint;",
        "ALTER COLUMN ... TYPE rewrites the table",
    ),
    "stored generated column": (
        EXPAND + "ALTER TABLE turnstore_messages ADD COLUMN p2 bigint "
        "GENERATED ALWAYS AS (position * 2) STORED;",
        "GENERATED ... STORED column rewrites the table",
    ),
    "volatile default": (
        EXPAND + "ALTER TABLE turnstore_turns ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "volatile default rewrites the table",
    ),
    "set not null with nothing before": (
        EXPAND + "ALTER TABLE turnstore_turns ALTER COLUMN started_at SET NOT NULL;",
        "SET NOT NULL without a validated CHECK",
    ),
    "lock table": (
        EXPAND + "LOCK TABLE turnstore_messages IN ACCESS EXCLUSIVE MODE;",
        "holds an exclusive lock for the whole table",
    ),
    "vacuum full": (EXPAND + "VACUUM FULL turnstore_messages;", "holds an exclusive lock"),
    "drop a column in an expand migration": (
        EXPAND + "ALTER TABLE turnstore_turns DROP COLUMN error;",
        "removes ERROR in a migration not declared contract",
    ),
    "drop a function in an expand migration": (
        EXPAND + "DROP FUNCTION turnstore_apply(turnstore_write[]);",
        "removes TURNSTORE_APPLY in a migration not declared contract",
    ),
    "rename in an expand migration": (
        EXPAND + "ALTER TABLE turnstore_turns RENAME COLUMN error TO failure;",
        "RENAME in a migration not declared contract",
    ),
    "drop what this code still queries": (
        CONTRACT + "DROP TABLE turnstore_turns;",
        "removes TURNSTORE_TURNS, which this code's queries still use",
    ),
    "contract serving only itself": (
        f"-- turnstore: contract, code from {NEXT}\nALTER TABLE x DROP COLUMN y;",
        "a contract migration serves code older than itself",
    ),
    "no kind declared": ("CREATE TABLE t (id int);", "must say what it is"),
}


@pytest.mark.parametrize("sample", sorted(BAD))
def test_a_bad_migration_is_flagged(sample: str) -> None:
    text, rule = BAD[sample]
    assert any(rule in found for found in _rules(_m(text))), _rules(_m(text))


GOOD = {
    "concurrent index": EXPAND + NO_TX + "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "
    "turnstore_x ON turnstore_turns (conversation_id, lease_owner);\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS turnstore_y ON turnstore_turns (error);",
    "a new table and its indexes": EXPAND + "CREATE TABLE turnstore_notes (id text PRIMARY KEY,"
    " turn_id text REFERENCES turnstore_turns (id), CHECK (id <> ''));\n"
    "CREATE INDEX turnstore_notes_by_turn ON turnstore_notes (turn_id);\n"
    "ALTER TABLE turnstore_notes ADD CONSTRAINT n CHECK (length(id) < 9);",
    "a nullable column and a constant default": EXPAND + "ALTER TABLE turnstore_turns "
    "ADD COLUMN note text, ADD COLUMN weight integer NOT NULL DEFAULT 1;",
    "a constraint not valid": EXPAND + "ALTER TABLE turnstore_usage ADD CONSTRAINT u_fk "
    "FOREIGN KEY (conversation_id) REFERENCES turnstore_conversations (id) NOT VALID;",
    "a function replaced": EXPAND + "CREATE OR REPLACE FUNCTION turnstore_f() RETURNS int "
    "LANGUAGE sql AS $$ SELECT 1; $$;",
    "a contract migration dropping what nothing queries": CONTRACT
    + "DROP FUNCTION IF EXISTS turnstore_claim_v6(bigint);\n"
    "ALTER TABLE turnstore_messages DROP COLUMN IF EXISTS legacy;",
    "a trigger replaced": EXPAND + "DROP TRIGGER turnstore_t ON turnstore_turns;\n"
    "CREATE TRIGGER turnstore_t BEFORE UPDATE ON turnstore_turns "
    "FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_change();",
    "a concurrent drop in a contract migration": CONTRACT
    + NO_TX
    + "DROP INDEX CONCURRENTLY IF EXISTS turnstore_old;",
}


@pytest.mark.parametrize("sample", sorted(GOOD))
def test_a_good_migration_passes(sample: str) -> None:
    assert _rules(_m(GOOD[sample])) == []


def test_set_not_null_after_a_validated_check_of_an_earlier_migration_passes() -> None:
    add = _m(
        EXPAND + "ALTER TABLE turnstore_turns ADD CONSTRAINT turns_started "
        "CHECK (started_at IS NOT NULL) NOT VALID;"
    )
    validate = _m(
        EXPAND + "ALTER TABLE turnstore_turns VALIDATE CONSTRAINT turns_started;", NEXT + 1
    )
    set_it = _m(
        EXPAND + "ALTER TABLE turnstore_turns ALTER COLUMN started_at SET NOT NULL;", NEXT + 2
    )
    assert _rules(add, validate, set_it) == []
    # without the validation in between it is flagged
    assert any("SET NOT NULL" in r for r in _rules(add, set_it))


@pytest.mark.parametrize(
    ("version", "rules"),
    [
        (2, ["CREATE INDEX on an existing table without CONCURRENTLY", "DROP INDEX without"]),
        (3, ["removes TURNSTORE_CLAIM in a migration not declared contract"]),
        (
            7,
            [
                "ADD FOREIGN KEY on an existing table without NOT VALID",
                "a new GENERATED ... STORED column rewrites the table",
            ],
        ),
    ],
)
def test_the_baselines_lock_heavy_migrations_would_be_flagged(
    version: int, rules: list[str]
) -> None:
    old = sql.migrations("postgres")[version - 1]
    found = _rules(_m(EXPAND + old.sql, name=old.name))
    for rule in rules:
        assert any(rule in f for f in found), (rule, found)
