"""Events out: the outbox and webhook subscriptions (docs/WEBHOOKS.md, DESIGN.md "Events out").

- ``coalition_event_head``: one row, the last event seq given out. Every writer of an
  event updates it in its own transaction, so seqs are handed out in commit order: a
  reader that has seen seq N never sees a smaller one commit later (a sequence would
  allow that), and a rolled-back transaction gives its seqs back (no gaps).
- ``coalition_event``: the outbox. One row per event, written in the transaction of the
  fact it announces (an entry, a checkpoint, a settlement run). ``partner_id`` is the
  partner whose data it is about; NULL for public facts (a signed checkpoint), which
  every partner may receive. Payloads are bounded.
- ``coalition_webhook_subscription``: a partner's endpoint, the event types it wants,
  its signing secret sealed (AES-256-GCM under a key from settings, never the database),
  and its cursor: every event up to ``after_seq`` is delivered.
- ``coalition_webhook_delivery``: the delivery log, one row per attempt.
- ``coalition_hold_expiry_notice``: the holds whose expiry was announced (once each; a
  hold expires by time, with no entry to announce it: coalition/hold_expiry.py).
- A trigger on ``ledger_checkpoint`` writes ``checkpoint.signed`` in the signing
  transaction, whichever code path signs.

Revision ID: 0010w
Revises: 0009
"""

from alembic import op

revision = "0010w"
down_revision = "0009"
branch_labels = None
depends_on = None

PAYLOAD_BYTES_MAX = 16384

SCHEMA = f"""
CREATE TABLE coalition_event_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO coalition_event_head VALUES (true, 0);

CREATE TABLE coalition_event (
    event_seq bigint PRIMARY KEY CHECK (event_seq > 0),
    event_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    partner_id text,
    event_type text NOT NULL CHECK (event_type ~ '^[a-z_]+\\.[a-z_]+$'),
    occurred_us bigint NOT NULL,
    payload jsonb NOT NULL CHECK (octet_length(payload::text) <= {PAYLOAD_BYTES_MAX})
);
CREATE INDEX coalition_event_partner ON coalition_event (partner_id, event_seq);

CREATE TABLE coalition_webhook_subscription (
    subscription_id text PRIMARY KEY,
    partner_id text NOT NULL REFERENCES coalition_partner (partner_id),
    url text NOT NULL CHECK (length(url) <= 2000),
    event_types text[] NOT NULL CHECK (cardinality(event_types) > 0),
    secret_sealed bytea NOT NULL,
    key_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'failing', 'deleted')),
    after_seq bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_us bigint NOT NULL DEFAULT 0,
    last_error text,
    created_at_us bigint NOT NULL
);
CREATE INDEX coalition_webhook_subscription_partner
    ON coalition_webhook_subscription (partner_id);

CREATE TABLE coalition_webhook_delivery (
    delivery_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id text NOT NULL REFERENCES coalition_webhook_subscription (subscription_id),
    event_seq bigint NOT NULL,
    event_id uuid NOT NULL,
    attempt integer NOT NULL,
    attempted_at_us bigint NOT NULL,
    status_code integer,
    error text,
    duration_ms integer NOT NULL,
    delivered boolean NOT NULL
);
CREATE INDEX coalition_webhook_delivery_subscription
    ON coalition_webhook_delivery (subscription_id, delivery_id);

CREATE TABLE coalition_hold_expiry_notice (
    hold_seq bigint PRIMARY KEY,
    event_seq bigint NOT NULL
);

CREATE FUNCTION coalition_checkpoint_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    seq bigint;
BEGIN
    UPDATE coalition_event_head SET last_seq = last_seq + 1 RETURNING last_seq INTO seq;
    INSERT INTO coalition_event (event_seq, partner_id, event_type, occurred_us, payload)
    VALUES (seq, NULL, 'checkpoint.signed', NEW.signed_at_us, jsonb_build_object(
        'tree_size', NEW.tree_size,
        'root_hash', encode(NEW.root_hash, 'hex'),
        'key_name', NEW.key_name,
        'key_id', NEW.key_id,
        'signed_note', convert_from(NEW.signed_note, 'UTF8')));
    RETURN NEW;
END
$$;
CREATE TRIGGER ledger_checkpoint_event AFTER INSERT ON ledger_checkpoint
    FOR EACH ROW EXECUTE FUNCTION coalition_checkpoint_event();
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute("GRANT SELECT, UPDATE ON coalition_event_head TO coalition_app")
    op.execute("GRANT SELECT, INSERT ON coalition_event TO coalition_app")
    op.execute("GRANT SELECT, INSERT, UPDATE ON coalition_webhook_subscription TO coalition_app")
    op.execute("GRANT SELECT, INSERT ON coalition_webhook_delivery TO coalition_app")
    op.execute("GRANT SELECT, INSERT ON coalition_hold_expiry_notice TO coalition_app")


def downgrade() -> None:
    raise NotImplementedError("the outbox is never migrated down")
