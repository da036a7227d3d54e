"""A plain PL/pgSQL double-entry ledger: the baseline the side-by-side benchmark runs ours
against. No chain, no lots, no idempotency, no Merkle tree: lock both accounts in id
order, check the balance bound, move both balances, insert two entry rows.

One call is one durable transaction (the connection is in autocommit mode), like one
single-call append of ours; ``pl_transfers`` moves many pairs in one call.
"""

from __future__ import annotations

from typing import Any

import psycopg

ACCOUNTS_COUNT = 64
BALANCE_FLOOR = -(10**15)  # as our benchmark accounts (overdraft), a bound that never bites

SCHEMA = f"""
CREATE TABLE pl_account (
    id integer PRIMARY KEY,
    balance bigint NOT NULL,
    floor bigint NOT NULL
);
CREATE TABLE pl_entry (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id bigint NOT NULL,
    account_id integer NOT NULL REFERENCES pl_account,
    amount bigint NOT NULL,
    balance_after bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE pl_transfer_id;

CREATE FUNCTION pl_transfer(from_id integer, to_id integer, amount bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    transfer bigint := nextval('pl_transfer_id');
    from_after bigint;
    to_after bigint;
BEGIN
    IF from_id = to_id OR amount <= 0 THEN
        RAISE EXCEPTION 'invalid transfer';
    END IF;
    PERFORM 1 FROM pl_account WHERE id IN (from_id, to_id) ORDER BY id FOR UPDATE;
    UPDATE pl_account SET balance = balance - amount
        WHERE id = from_id AND balance - amount >= floor
        RETURNING balance INTO from_after;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient balance';
    END IF;
    UPDATE pl_account SET balance = balance + amount WHERE id = to_id
        RETURNING balance INTO to_after;
    INSERT INTO pl_entry (transfer_id, account_id, amount, balance_after)
        VALUES (transfer, from_id, -amount, from_after), (transfer, to_id, amount, to_after);
    RETURN transfer;
END $$;

CREATE FUNCTION pl_transfers(from_ids integer[], to_ids integer[], amounts bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    -- Every account of the call, in id order, first: two calls never wait on each other
    -- in a cycle.
    PERFORM 1 FROM pl_account WHERE id = ANY(from_ids || to_ids) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. array_length(from_ids, 1) LOOP
        PERFORM pl_transfer(from_ids[i], to_ids[i], amounts[i]);
    END LOOP;
    RETURN array_length(from_ids, 1);
END $$;

INSERT INTO pl_account SELECT g, 0, {BALANCE_FLOOR} FROM generate_series(0, {ACCOUNTS_COUNT - 1}) g;
"""


def create(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SCHEMA)


def pair(number: int) -> tuple[int, int, int]:
    """The accounts and amount of transfer ``number``: the same spread as ours."""
    amount = 1 + number % 997
    first = number % ACCOUNTS_COUNT
    second = (number + 1 + (number // ACCOUNTS_COUNT) % 63) % ACCOUNTS_COUNT
    return first, second, amount
