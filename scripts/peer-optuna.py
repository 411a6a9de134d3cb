#!/usr/bin/env python3
"""The script a user would write instead of ftsweep (the peer of examples/bench_bound.rs).

Optuna's GridSampler over n_epochs 1, 3, 6 x learning_rate_multiplier 0.3, 1.5 x batch_size 4, 32,
4 trials at a time; each trial creates a fine-tuning job with the openai SDK, polls it every 2 s
until it ends, then evaluates its model on the validation examples by chat completions (exact
match). Prints the requests it sent, as ftsweep does: `requests to URL: total=N completions=M ...`
on stderr. Not part of CI: it needs `pip install optuna openai` (a venv under target/).
"""

import argparse
import collections
import json
import sys
import threading
import time

try:
    import httpx
except ImportError:  # newer openai releases ship it as httpx2
    import httpx2 as httpx
import optuna
from openai import OpenAI

GRID = {"n_epochs": [1, 3, 6], "learning_rate_multiplier": [0.3, 1.5], "batch_size": [4, 32]}

counts = collections.Counter()
lock = threading.Lock()


def count(request):
    path = request.url.path
    kind = "completions" if path.endswith("/chat/completions") else (
        "uploads" if path.endswith("/files") else
        "events" if path.endswith("/events") else
        "checkpoints" if path.endswith("/checkpoints") else
        "creates" if request.method == "POST" and path.endswith("/fine_tuning/jobs") else
        "polls" if "/fine_tuning/jobs/" in path else "other")
    with lock:
        counts[kind] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    args = ap.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.key,
                    http_client=httpx.Client(event_hooks={"request": [count]}))
    with open(args.train, "rb") as f:
        train = client.files.create(file=f, purpose="fine-tune").id
    with open(args.valid, "rb") as f:
        valid = client.files.create(file=f, purpose="fine-tune").id
    examples = [json.loads(line) for line in open(args.valid) if line.strip()]

    def objective(trial):
        hp = {k: trial.suggest_categorical(k, v) for k, v in GRID.items()}
        job = client.fine_tuning.jobs.create(
            model="local/ngram", training_file=train, validation_file=valid,
            method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
            job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status != "succeeded":
            raise RuntimeError(f"job {job.id} ended {job.status}")
        right = 0
        for ex in examples:
            messages, answer = ex["messages"][:-1], ex["messages"][-1]["content"]
            reply = client.chat.completions.create(model=job.fine_tuned_model, messages=messages,
                                                   temperature=0, max_completion_tokens=64)
            right += (reply.choices[0].message.content or "").strip() == answer.strip()
        return right / len(examples)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(GRID, seed=42))
    study.optimize(objective, n_trials=12, n_jobs=4)
    print(f"best {study.best_value:.3f} at {study.best_params}")
    total = sum(counts.values())
    listed = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"requests to {args.base_url}: total={total} {listed}", file=sys.stderr)


if __name__ == "__main__":
    main()
