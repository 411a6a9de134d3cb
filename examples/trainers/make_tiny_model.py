#!/usr/bin/env python3
"""Build a tiny, randomly initialised Llama-architecture causal LM, with no download.

The tokenizer is a word-level one trained here (with the `tokenizers` library) on the
chat JSONL files given, wrapped in PreTrainedTokenizerFast with pad/eos tokens and a
chat template (with `{% generation %}` markers, so TRL's assistant_only_loss works).
Model and tokenizer are written with save_pretrained to OUT, which then loads like any
Hugging Face model directory (AutoModelForCausalLM / AutoTokenizer). For smoke tests
of the recipes in this folder, not for real use.

    python make_tiny_model.py --data train.jsonl [--data valid.jsonl] --out DIR
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIAL = ["<pad>", "<unk>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

# Each message is `<|role|> content <|end|>`; the assistant's content and its end token
# are inside the generation block, so an assistant-only loss also learns to stop.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|> ' }}{% generation %}{{ message['content'] }}{{ ' <|end|>' }}{% endgeneration %}{{ ' ' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)


def texts(paths):
    """Every message's text in the chat JSONL files (content strings or text parts)."""
    for path in paths:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    messages = json.loads(line)["messages"]
                except (ValueError, KeyError, TypeError) as e:
                    sys.exit(f"error: {path}:{n}: not a chat line ({e})")
                for m in messages:
                    c = m.get("content") or ""
                    if isinstance(c, list):
                        c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
                    yield c


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, help="chat JSONL (repeatable)")
    p.add_argument("--out", required=True, help="directory to write the model to")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8000, help="largest vocabulary")
    p.add_argument("--max-position", type=int, default=512)
    p.add_argument("--embedding-std", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    trainer = trainers.WordLevelTrainer(vocab_size=a.vocab, min_frequency=1, special_tokens=SPECIAL)
    tok.train_from_iterator(texts(a.data), trainer=trainer)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL[4:],
    )
    hf_tok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(a.seed)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=a.hidden,
        intermediate_size=a.hidden * 2,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.heads,
        max_position_embeddings=a.max_position,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Llama's init (std 0.02) makes every logit tiny at this width, and the (tied) embedding
    # is frozen under LoRA: larger embeddings let an adapter reach confident predictions.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, a.embedding_std)
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out)
    hf_tok.save_pretrained(a.out)
    params = sum(t.numel() for t in model.parameters())
    print(f"tiny model: {params:,} parameters, vocabulary {len(hf_tok):,}, written to {os.path.abspath(a.out)}")


if __name__ == "__main__":
    main()
