"""An Axolotl plugin that writes what ftsweep reads: {output_dir}/metrics.jsonl and trainer_state.json.

Axolotl already saves `checkpoint-<step>/` (with `save_strategy: epoch`) and the final adapter in
`output_dir`; this adds one JSON object a line for each of the Trainer's log entries (step, epoch,
loss, learning_rate, eval_loss, ..., max_steps), flushed per line, and `trainer_state.json` in
`output_dir` when training ends. Name it in the config, with this folder on PYTHONPATH:

    plugins:
      - ftsweep_axolotl.MetricsJsonlPlugin

Written against Axolotl 0.18's plugin interface (axolotl.integrations.base.BasePlugin); see
axolotl.yml beside this file.
"""

import json
import math
import os

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class MetricsJsonlCallback(TrainerCallback):
    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.file = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.file is None:
            os.makedirs(self.output_dir, exist_ok=True)
            self.file = open(os.path.join(self.output_dir, "metrics.jsonl"), "a", encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.file is None or not logs:
            return
        row = dict(logs)
        row.pop("total_flos", None)
        row["step"] = state.global_step
        if state.epoch is not None:
            row.setdefault("epoch", state.epoch)
        row["max_steps"] = state.max_steps
        # JSON has no NaN or infinity: write them as 1e308, so a diverged loss still reads as one.
        row = {k: (v if not isinstance(v, float) or math.isfinite(v) else 1e308) for k, v in row.items()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.file is not None:
            self.file.close()
            self.file = None
        if state.is_world_process_zero:
            state.save_to_json(os.path.join(self.output_dir, "trainer_state.json"))


class MetricsJsonlPlugin(BasePlugin):
    def add_callbacks_pre_trainer(self, cfg, model):
        return [MetricsJsonlCallback(cfg.output_dir)]
