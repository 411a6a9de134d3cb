-- Durability: which process owns a run (a lease it renews), when a queued
-- run may start, and what a run was expected to cost and did cost.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until REAL;
ALTER TABLE runs ADD COLUMN not_before REAL;
ALTER TABLE runs ADD COLUMN note TEXT;
ALTER TABLE runs ADD COLUMN estimated_tokens INTEGER;
ALTER TABLE runs ADD COLUMN estimated_cost_usd REAL;
ALTER TABLE runs ADD COLUMN cost_usd REAL;
