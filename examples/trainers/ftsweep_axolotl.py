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

import os

from axolotl.integrations.base import BasePlugin
from ftsweep_metrics import MetricsJsonl
from transformers import TrainerCallback


class MetricsJsonlCallback(MetricsJsonl, TrainerCallback):
    def __init__(self, output_dir):
        super().__init__(
            os.path.join(output_dir, "metrics.jsonl"), state_path=os.path.join(output_dir, "trainer_state.json")
        )


class MetricsJsonlPlugin(BasePlugin):
    def add_callbacks_pre_trainer(self, cfg, model):
        return [MetricsJsonlCallback(cfg.output_dir)]
