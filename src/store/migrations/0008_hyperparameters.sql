-- The general search space: a run's hyperparameters other than the four of
-- ftsweep 0.1 (n_epochs, batch_size, learning_rate_multiplier, seed, which
-- keep their columns) as a JSON object of numbers, e.g. {"lora_r": 8}; NULL
-- when it has none. A database of before keeps its rows as they are.
ALTER TABLE runs ADD COLUMN hyperparameters TEXT;
