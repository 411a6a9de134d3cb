#!/usr/bin/env python3
"""LoRA supervised fine-tuning with TRL's SFTTrainer, written the way ftsweep reads it.

Trains a PEFT LoRA adapter on chat JSONL (one `{"messages": [...]}` conversation a line)
and writes, in --output-dir:
  metrics.jsonl            one JSON object a line, the Trainer's log entries as they happen
                           (step, epoch, loss, learning_rate, mean_token_accuracy; eval_loss,
                           eval_mean_token_accuracy for evaluations; max_steps); NaN and
                           infinity, which JSON lacks, are written as 1e308
  checkpoint-<step>/       an adapter and its trainer_state.json at the end of each epoch
  adapter_config.json, adapter_model.safetensors, trainer_state.json   at the end

Made for ftsweep's `provider = "command"` (see "Your own GPUs" in its README):

  python trl_sft.py --model Qwen/Qwen2.5-0.5B-Instruct --train train.jsonl --valid valid.jsonl \
      --epochs 2 --lr 2e-4 --batch-size 8 --lora-r 16 --seed 1 --output-dir runs/x [--init-from DIR]

Exit 0 on success, 2 on bad arguments or data, 1 if training fails.
"""

import argparse
import json
import os
import sys

from ftsweep_metrics import MetricsJsonl


def fail(message, code=2):
    print(f"trl_sft: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def text_of(content):
    """A message's content as text: a string, or the text of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    raise ValueError("content must be a string or a list of text parts")


def read_chat_jsonl(path):
    """The conversations of a chat JSONL file, each reduced to roles and text."""
    rows = []
    try:
        f = open(path, encoding="utf-8-sig")
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                messages = [{"role": m["role"], "content": text_of(m.get("content"))} for m in obj["messages"]]
            except (ValueError, KeyError, TypeError) as e:
                fail(f"{path}:{n}: not a chat line ({type(e).__name__}: {e})")
            if not any(m["role"] == "assistant" for m in messages):
                fail(f"{path}:{n}: no assistant message")
            rows.append({"messages": messages})
    if not rows:
        fail(f"{path}: no conversations")
    return rows


def parse_args(argv):
    p = argparse.ArgumentParser(description="LoRA SFT with TRL, writing metrics.jsonl and epoch checkpoints")
    p.add_argument("--model", required=True, help="base model: a Hugging Face id or a local directory")
    p.add_argument("--train", required=True, help="training chat JSONL")
    p.add_argument("--valid", default="", help="validation chat JSONL (evaluated --evals-per-epoch times an epoch)")
    p.add_argument("--epochs", type=float, required=True, help="epochs to train (on top of --init-from)")
    p.add_argument("--lr", type=float, required=True, help="peak learning rate")
    p.add_argument("--batch-size", type=int, required=True, help="per-device batch size")
    p.add_argument("--lora-r", type=int, required=True, help="LoRA rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--init-from", default="", help="continue training this adapter directory (empty: a new adapter)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="all-linear", help='"all-linear" or a comma-separated list')
    p.add_argument("--max-length", type=int, default=1024, help="tokens per example (longer ones are truncated)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--logs-per-eval", type=int, default=4, help="training-loss log entries between evaluations")
    p.add_argument("--lr-scheduler", default="linear", help="transformers' lr_scheduler_type (e.g. linear, cosine, constant)")
    p.add_argument("--warmup", type=float, default=0.0, help="warm-up steps, or below 1 a ratio of the total steps")
    p.add_argument("--assistant-only-loss", action="store_true", help="train on the assistant turns only")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="auto: bf16 on a GPU that has it, else fp32")
    a = p.parse_args(argv)
    for name in ("epochs", "lr", "batch_size", "lora_r", "max_length", "grad_accum", "evals_per_epoch", "logs_per_eval"):
        if not getattr(a, name) > 0:
            fail(f"--{name.replace('_', '-')} must be greater than 0 (got {getattr(a, name)})")
    if a.init_from and not os.path.isfile(os.path.join(a.init_from, "adapter_config.json")):
        fail(f"--init-from {a.init_from}: no adapter_config.json there")
    return a


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    train_rows = read_chat_jsonl(a.train)
    valid_rows = read_chat_jsonl(a.valid) if a.valid else None
    os.makedirs(a.output_dir, exist_ok=True)

    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Callback(MetricsJsonl, TrainerCallback):
        pass

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        fail(f"--model {a.model}: its tokenizer has no chat template")

    gpu = torch.cuda.is_available()
    precision = a.precision
    if precision == "auto":
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)

    peft_config = None
    if a.init_from:
        model = PeftModel.from_pretrained(model, a.init_from, is_trainable=True)
        r = model.peft_config["default"].r
        if r != a.lora_r:
            print(f"trl_sft: note: --init-from's adapter has rank {r}; --lora-r {a.lora_r} is ignored", file=sys.stderr)
    else:
        modules = a.target_modules if a.target_modules == "all-linear" else a.target_modules.split(",")
        peft_config = LoraConfig(
            r=a.lora_r,
            lora_alpha=a.lora_alpha if a.lora_alpha is not None else 2 * a.lora_r,
            lora_dropout=a.lora_dropout,
            target_modules=modules,
            task_type="CAUSAL_LM",
        )

    # Evaluations and log entries at fixed fractions of the whole job (transformers reads a
    # step count below 1 as a ratio of the total steps), so every epoch gets the same number.
    # (a ratio just below 1 is the last step: 1.0 itself would read as "every step").
    eval_ratio = min(1.0 / (a.epochs * a.evals_per_epoch), 1.0 - 1e-9)
    log_ratio = eval_ratio / a.logs_per_eval
    config = SFTConfig(
        output_dir=a.output_dir,
        num_train_epochs=a.epochs,
        learning_rate=a.lr,
        lr_scheduler_type=a.lr_scheduler,
        warmup_steps=a.warmup,
        per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=a.batch_size,
        gradient_accumulation_steps=a.grad_accum,
        seed=a.seed,
        data_seed=a.seed,
        max_length=a.max_length,
        packing=False,
        assistant_only_loss=a.assistant_only_loss,
        eval_strategy="steps" if valid_rows else "no",
        eval_steps=eval_ratio if valid_rows else None,
        logging_strategy="steps",
        logging_steps=log_ratio,
        logging_first_step=True,
        save_strategy="epoch",
        include_num_input_tokens_seen="non_padding",  # trainer_state.json's num_input_tokens_seen
        save_only_model=True,  # continuations start from an adapter (--init-from), not from optimizer state
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(valid_rows) if valid_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Callback(os.path.join(a.output_dir, "metrics.jsonl"))],
    )
    trainer.train()
    trainer.save_model(a.output_dir)  # the final adapter (adapter_config.json + weights) and tokenizer
    trainer.save_state()  # trainer_state.json, after the weights
    if not os.path.isfile(os.path.join(a.output_dir, "adapter_config.json")):
        fail(f"{a.output_dir}: no adapter_config.json was written", code=1)
    print(
        f"trl_sft: trained {trainer.state.global_step} steps ({trainer.state.epoch:g} epochs); adapter in "
        f"{os.path.abspath(a.output_dir)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
