-- Distribute the coalition schema by chain on a Citus coordinator (docs/CITUS.md).
-- Run once, as the owner, after `coalition migrate` has made the schema on the coordinator
-- and the workers were added (SELECT citus_add_node('citus-worker-1', 5432); …).
-- Not run on this project's machine: Citus is not installed there (docs/CITUS.md).

SET citus.enable_unsafe_triggers = on;  -- the append-only triggers, on every shard

-- The ledger: every table keyed by chain first, all co-located with the chain head, so
-- an append's statements, joins and foreign keys stay on the node holding the chain.
SELECT create_distributed_table('ledger_chain', 'chain_id');
SELECT create_distributed_table('ledger_account', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_entry', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_ref', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_posting', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_balance', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_lot', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_hold', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_merkle_node', 'chain_id', colocate_with => 'ledger_chain');
SELECT create_distributed_table('ledger_checkpoint', 'chain_id', colocate_with => 'ledger_chain');

-- Small, read everywhere, written rarely: a copy on every node.
SELECT create_reference_table('ledger_partition_plan');
SELECT create_reference_table('ledger_partition');
SELECT create_reference_table('coalition_partner');
SELECT create_reference_table('coalition_terms');
SELECT create_reference_table('coalition_earning_rules');
SELECT create_reference_table('coalition_policy');
SELECT create_reference_table('coalition_api_key');
SELECT create_reference_table('coalition_pii_key');
