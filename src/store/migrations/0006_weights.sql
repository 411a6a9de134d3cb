-- Compact weights. A model whose weights are another model's of the same job (a local job's
-- final model is its last epoch's checkpoint) names it in `same_as` and stores an empty blob.
-- `ftsweep prune` empties a model's blob and says why in `dropped`, so that asking for the
-- model later says what happened; its scores and replies stay. Blobs keep their own format
-- (a magic at their start), so weights stored before this migration still load.
ALTER TABLE local_models ADD COLUMN same_as TEXT;
ALTER TABLE local_models ADD COLUMN dropped TEXT;
