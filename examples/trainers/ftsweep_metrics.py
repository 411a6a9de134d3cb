"""The metrics.jsonl that ftsweep reads, written by a Hugging Face TrainerCallback.

`MetricsJsonl` is a mixin with the callback's methods; mix it with `transformers.TrainerCallback`
(imported where torch is, so this file needs nothing beyond the standard library):

    class Callback(MetricsJsonl, TrainerCallback):
        pass

It appends each of the Trainer's log entries (step, epoch, loss, learning_rate, eval_loss, ...,
max_steps) to `path` as one JSON object a line, flushed per line, and when `state_path` is given
writes the Trainer's state there at the end of training. trl_sft.py and ftsweep_axolotl.py use it.
"""

import json
import math
import os


class MetricsJsonl:
    def __init__(self, path, state_path=None):
        self.path = path
        self.state_path = state_path
        self.file = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")

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
        if self.state_path and state.is_world_process_zero:
            state.save_to_json(self.state_path)
