"""The journal partitioned by chain and sequence range; the chain in every ledger key.

- ``ledger_entry``, ``ledger_posting`` and ``ledger_merkle_node`` are partitioned LIST
  (chain_id), and each chain's partition RANGE (seq) — a Merkle node by ``sealed_seq``,
  the seq of the leaf that completes it, so an append only ever writes the newest range.
  Each chain's partition also has a DEFAULT range partition: an append that outruns the
  partitions made ahead lands there and never fails (docs/DESIGN.md "Partitions").
- References leave ``ledger_entry``'s unique index (a partitioned table's unique index
  must hold its partition key, and seq cannot be in the idempotency key): they get their
  own append-only table ``ledger_ref`` keyed (chain_id, ref_scope, ref_key), written in
  the append's statement.
- Accounts, balances, lots and holds carry chain_id first in their primary keys, so
  every ledger table can be distributed by chain (docs/CITUS.md).
- ``ledger_ensure_partitions(chain, through_seq)`` (SECURITY DEFINER: the service's role
  owns no table) makes the range partitions up to ``through_seq``; the ``partitions`` job
  calls it ahead of need, and a new chain's row in ``ledger_chain`` makes its first ones.

Existing rows are copied into the new tables; the old ones are dropped.

Revision ID: 0021
Revises: 0017
"""

from alembic import op

revision = "0021"
down_revision = "0017"
branch_labels = None
depends_on = None

# 2^22 entries a range: ~2,400 ranges a chain at ten billion entries (the planner prunes
# to one by seq), each a few GB with its postings — its indexes stay cacheable, and a
# power of two keeps every Merkle subtree of up to 2^22 leaves in the range it ends in.
ENTRIES_PER_PARTITION = 1 << 22
PARTITIONED = ("ledger_entry", "ledger_posting", "ledger_merkle_node")

SCHEMA = f"""
CREATE TABLE ledger_partition_plan (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    entries_per_partition bigint NOT NULL CHECK (entries_per_partition > 0)
);
INSERT INTO ledger_partition_plan VALUES (true, {ENTRIES_PER_PARTITION});

-- The ranges made so far, per chain (the same bounds for the three tables).
CREATE TABLE ledger_partition (
    chain_id text NOT NULL,
    from_seq bigint NOT NULL,
    to_seq bigint NOT NULL CHECK (to_seq > from_seq),
    PRIMARY KEY (chain_id, from_seq)
);

CREATE TABLE ledger_entry_new (
    chain_id text NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    time_us bigint NOT NULL,
    kind text NOT NULL,
    ref_scope text NOT NULL,
    ref_key text NOT NULL,
    request_hash bytea NOT NULL,
    canonical bytea NOT NULL,
    leaf_hash bytea NOT NULL CHECK (length(leaf_hash) = 32),
    corrects_seq bigint,
    PRIMARY KEY (chain_id, seq)
) PARTITION BY LIST (chain_id);

CREATE TABLE ledger_ref (
    chain_id text NOT NULL,
    ref_scope text NOT NULL,
    ref_key text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (chain_id, ref_scope, ref_key)
);

CREATE TABLE ledger_posting_new (
    chain_id text NOT NULL,
    seq bigint NOT NULL,
    posting_index integer NOT NULL,
    account text NOT NULL,
    unit text NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    PRIMARY KEY (chain_id, seq, posting_index)
) PARTITION BY LIST (chain_id);

CREATE TABLE ledger_merkle_node_new (
    chain_id text NOT NULL,
    level smallint NOT NULL CHECK (level >= 1),
    node_index bigint NOT NULL CHECK (node_index >= 0),
    sealed_seq bigint NOT NULL CHECK (sealed_seq = ((node_index + 1) << level) - 1),
    node_hash bytea NOT NULL CHECK (length(node_hash) = 32),
    PRIMARY KEY (chain_id, sealed_seq, level)
) PARTITION BY LIST (chain_id);
"""

# Partition names: the chain id when it is a plain short word, else a digest of it.
ENSURE = """
CREATE FUNCTION ledger_partition_name(parent text, chain text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT parent || '__' || CASE WHEN chain ~ '^[a-z0-9]{1,24}$' THEN chain
                                 ELSE 'h' || left(md5(chain), 12) END
$$;

CREATE FUNCTION ledger_ensure_partitions(chain text, through_seq bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    size bigint := (SELECT entries_per_partition FROM ledger_partition_plan);
    parent text;
    chain_part text;
    leaf text;
    key text;
    upper_seq bigint;
    spilled bigint;
    made bigint := 0;
BEGIN
    -- Serialize with the chain's writers (they take this lock first): no append of the
    -- chain runs while its ranges change, so none lands in a range being attached.
    PERFORM pg_advisory_xact_lock(727001, hashtext(chain));
    FOREACH parent IN ARRAY ARRAY['ledger_entry', 'ledger_posting', 'ledger_merkle_node'] LOOP
        chain_part := ledger_partition_name(parent, chain);
        IF to_regclass(chain_part) IS NULL THEN
            key := CASE parent WHEN 'ledger_merkle_node' THEN 'sealed_seq' ELSE 'seq' END;
            -- Made apart, then attached: attaching locks the parent SHARE UPDATE
            -- EXCLUSIVE (other chains' readers and writers go on); CREATE … PARTITION OF
            -- would lock it ACCESS EXCLUSIVE.
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                           ' PARTITION BY RANGE (%I)', chain_part, parent, key);
            EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT',
                           chain_part || '_default', chain_part);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%L)',
                           parent, chain_part, chain);
            PERFORM ledger_guard_partition(chain_part);
            PERFORM ledger_guard_partition(chain_part || '_default');
        END IF;
    END LOOP;
    upper_seq := coalesce((SELECT max(to_seq) FROM ledger_partition WHERE chain_id = chain), 0);
    WHILE upper_seq <= through_seq LOOP
        -- Rows past the last range (an append outran the job) stay in the default
        -- partition; the next range starts after them.
        spilled := greatest(
            (SELECT max(seq) + 1 FROM ledger_entry WHERE chain_id = chain AND seq >= upper_seq),
            (SELECT max(sealed_seq) + 1 FROM ledger_merkle_node
              WHERE chain_id = chain AND sealed_seq >= upper_seq));
        IF spilled IS NOT NULL AND spilled > upper_seq THEN
            upper_seq := spilled;
        END IF;
        FOREACH parent IN ARRAY ARRAY['ledger_entry', 'ledger_posting', 'ledger_merkle_node']
        LOOP
            chain_part := ledger_partition_name(parent, chain);
            leaf := chain_part || '_' || lpad(upper_seq::text, 12, '0');
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           leaf, chain_part);
            -- Attaching takes a SHARE UPDATE EXCLUSIVE lock on the parent: readers and
            -- writers of other chains go on.
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           chain_part, leaf, upper_seq, upper_seq + size);
            PERFORM ledger_guard_partition(leaf);
        END LOOP;
        INSERT INTO ledger_partition VALUES (chain, upper_seq, upper_seq + size);
        upper_seq := upper_seq + size;
        made := made + 1;
    END LOOP;
    RETURN made;
END
$$;

-- Row triggers on a partitioned table reach its partitions; TRUNCATE of one partition
-- fires only its own statement triggers, so each partition gets the refusal too.
CREATE FUNCTION ledger_guard_partition(tab text) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER ledger_partition_no_truncate BEFORE TRUNCATE ON %I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()', tab);
END
$$;

CREATE FUNCTION ledger_chain_partitions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM ledger_ensure_partitions(NEW.chain_id, NEW.tree_size);
    RETURN NEW;
END
$$;
"""

COPY = """
INSERT INTO ledger_entry SELECT * FROM ledger_entry_v1;
INSERT INTO ledger_ref SELECT chain_id, ref_scope, ref_key, seq FROM ledger_entry_v1;
INSERT INTO ledger_posting SELECT * FROM ledger_posting_v1;
INSERT INTO ledger_merkle_node
    SELECT chain_id, level, node_index, ((node_index + 1) << level) - 1, node_hash
    FROM ledger_merkle_node_v1;
"""

# The chain of each account: its chain's, while there has only ever been one chain.
KEYS = """
ALTER TABLE ledger_posting_v1 DROP CONSTRAINT ledger_posting_account_fkey;
ALTER TABLE ledger_balance DROP CONSTRAINT ledger_balance_account_fkey;
ALTER TABLE ledger_lot DROP CONSTRAINT ledger_lot_account_fkey;
ALTER TABLE ledger_hold DROP CONSTRAINT ledger_hold_account_fkey;
ALTER TABLE ledger_account DROP CONSTRAINT ledger_account_pkey;
ALTER TABLE ledger_balance DROP CONSTRAINT ledger_balance_pkey;
ALTER TABLE ledger_lot DROP CONSTRAINT ledger_lot_pkey;
ALTER TABLE ledger_hold DROP CONSTRAINT ledger_hold_pkey;
DROP INDEX ledger_lot_account;
DROP INDEX ledger_hold_active;
"""

NEW_KEYS = """
ALTER TABLE ledger_account ADD PRIMARY KEY (chain_id, account);
ALTER TABLE ledger_balance ADD PRIMARY KEY (chain_id, account),
    ADD FOREIGN KEY (chain_id, account) REFERENCES ledger_account (chain_id, account);
ALTER TABLE ledger_lot ADD PRIMARY KEY (chain_id, lot_id),
    ADD FOREIGN KEY (chain_id, account) REFERENCES ledger_account (chain_id, account);
CREATE INDEX ledger_lot_account ON ledger_lot (chain_id, account, opened_seq);
ALTER TABLE ledger_hold ADD PRIMARY KEY (chain_id, hold_seq),
    ADD FOREIGN KEY (chain_id, account) REFERENCES ledger_account (chain_id, account);
CREATE INDEX ledger_hold_active ON ledger_hold (chain_id, account) WHERE status = 'active';
ALTER TABLE ledger_posting ADD FOREIGN KEY (chain_id, account)
    REFERENCES ledger_account (chain_id, account);
CREATE INDEX ledger_entry_time ON ledger_entry (chain_id, time_us, seq);
CREATE INDEX ledger_entry_kind ON ledger_entry (chain_id, kind, seq);
CREATE INDEX ledger_entry_corrects ON ledger_entry (chain_id, corrects_seq)
    WHERE corrects_seq IS NOT NULL;
CREATE INDEX ledger_posting_account ON ledger_posting (chain_id, account, seq);
"""


def upgrade() -> None:
    for table in PARTITIONED:
        _set_aside(table)
    op.execute(SCHEMA)
    for table in PARTITIONED:
        op.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
        op.execute(f"ALTER INDEX {table}_new_pkey RENAME TO {table}_pkey")
    op.execute(ENSURE)
    op.execute(KEYS)
    # Every account, balance, lot and hold belongs to the one chain there has been.
    chains = [r[0] for r in op.get_bind().exec_driver_sql("SELECT chain_id FROM ledger_chain")]
    if len(chains) > 1:
        raise RuntimeError("accounts cannot be given a chain: the journal has several chains")
    chain = chains[0] if chains else "main"
    for table in ("ledger_account", "ledger_balance", "ledger_lot", "ledger_hold"):
        # Adding a column with a default rewrites no row (no UPDATE trigger fires); the
        # default goes at once, so every writer names the chain.
        op.execute(f"ALTER TABLE {table} ADD COLUMN chain_id text NOT NULL DEFAULT '{chain}'")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN chain_id DROP DEFAULT")
    op.execute(
        "SELECT ledger_ensure_partitions(chain_id, greatest(tree_size, 1) - 1) FROM ledger_chain"
    )
    if not chains:
        # The default chain's (ledger.journal.DEFAULT_CHAIN_ID) first range comes with the
        # schema: its first append then makes no table (DDL that costs more than the
        # append, and every database made from this one would pay it).
        op.execute("SELECT ledger_ensure_partitions('main', 0)")
    op.execute(COPY)
    op.execute(NEW_KEYS)
    for table in PARTITIONED:
        op.execute(f"DROP TABLE {table}_v1")
    for table in (*PARTITIONED, "ledger_ref"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(f"GRANT SELECT, INSERT ON {table} TO coalition_app")
    op.execute(
        "CREATE TRIGGER ledger_chain_partitions AFTER INSERT ON ledger_chain"
        " FOR EACH ROW EXECUTE FUNCTION ledger_chain_partitions()"
    )
    op.execute("GRANT SELECT ON ledger_partition_plan, ledger_partition TO coalition_app")
    op.execute("REVOKE ALL ON FUNCTION ledger_ensure_partitions(text, bigint) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION ledger_ensure_partitions(text, bigint) TO coalition_app")


def _set_aside(table: str) -> None:
    """Rename a table and its indexes out of the way (index names are per schema)."""
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
    op.execute(
        f"""
        DO $$
        DECLARE name text;
        BEGIN
            FOR name IN SELECT indexname FROM pg_indexes WHERE tablename = '{table}_v1' LOOP
                EXECUTE format('ALTER INDEX %I RENAME TO %I', name, name || '_v1');
            END LOOP;
        END
        $$;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("the journal is append-only; it is never migrated down")
