-- Spending less per decision: where a run's model comes from (its own job, a
-- checkpoint of another run's job, or a job continuing another run's model),
-- why early stopping ended its job, and each sweep's rungs and replicates.
ALTER TABLE runs ADD COLUMN origin TEXT NOT NULL DEFAULT 'job';
-- The run whose job gives the checkpoint, or whose model is continued.
ALTER TABLE runs ADD COLUMN source_run TEXT;
-- For a continuation: the epochs its parent chain trained.
ALTER TABLE runs ADD COLUMN parent_epochs INTEGER;
-- Set when early stopping cancelled the run's job: the reason, and the
-- epochs behind the checkpoint that became its model.
ALTER TABLE runs ADD COLUMN stop_reason TEXT;
ALTER TABLE runs ADD COLUMN model_epochs INTEGER;
-- Successive halving: the rung a run belongs to in this sweep.
ALTER TABLE sweep_runs ADD COLUMN rung INTEGER;
-- search | replicate
ALTER TABLE sweep_runs ADD COLUMN role TEXT NOT NULL DEFAULT 'search';
