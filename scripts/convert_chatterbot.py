#!/usr/bin/env python3
"""Convert the English ChatterBot corpus into ftsweep's example dataset.

Re-run it (from the repository root) with:

    python3 -m venv /tmp/cbvenv && /tmp/cbvenv/bin/pip install chatterbot-corpus==1.3.3 pyyaml
    /tmp/cbvenv/bin/python scripts/convert_chatterbot.py

What it does: reads every `chatterbot_corpus/data/english/*.yml` file of the
installed PyPI package `chatterbot-corpus` 1.3.3 (BSD-3-Clause, upstream
https://github.com/gunthercox/chatterbot-corpus) and turns it into a
topic-classification task in chat-format JSONL. Each example is one user
utterance (the elements at even positions 0, 2, 4, ... of a conversation);
the assistant reply is the topic label of the file it came from (the first
entry of the file's `categories` field, or the file stem if that is missing,
lowercased with everything but letters and digits removed: "AI" -> "ai",
"tech support" -> "techsupport").

Every line is
    {"messages":[{"role":"system","content":SYSTEM},
                 {"role":"user","content":UTTERANCE},
                 {"role":"assistant","content":LABEL}]}
with one fixed SYSTEM prompt listing all labels.

Utterances are deduplicated on a case-insensitive, whitespace-normalised key;
the first occurrence (files in sorted order, conversations in file order)
wins, so an utterance never appears twice, under two labels, or in both
splits. The split is stratified by label and deterministic (seed 20261123):
round(0.2 * n) examples of each label (at least 1 when n >= 2) go to
validation, the rest to training.

Outputs, in --out (default: <repo>/examples/data):
    topics-train.jsonl, topics-valid.jsonl  the dataset
    bad-line.jsonl                          first 20 train lines with line 7
                                            cut in half (parse-error fixture)

The outputs are committed to the repository; this script only needs to be
re-run if the conversion itself changes. examples/data/NOTICE (written by
hand) records the source, the license and the line counts.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import yaml

SEED = 20261123
VALID_FRACTION = 0.2
MAX_TOTAL_BYTES = 1_000_000
EXPECTED_VERSION = "1.3.3"
BAD_LINE_COUNT = 20
BAD_LINE_NUMBER = 7  # 1-based

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_corpus_dir():
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("chatterbot_corpus is not installed; see the docstring of this script")
    try:
        version = importlib.metadata.version("chatterbot-corpus")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != EXPECTED_VERSION:
        print(f"warning: chatterbot-corpus {version} installed, expected {EXPECTED_VERSION}",
              file=sys.stderr)
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "english"


def normalise_label(raw):
    label = re.sub(r"[^0-9a-z]", "", str(raw).lower())
    if not label:
        raise ValueError(f"empty label from {raw!r}")
    return label


def file_label(path, doc):
    categories = doc.get("categories") if isinstance(doc, dict) else None
    if isinstance(categories, str):
        categories = [categories]
    if categories:
        return normalise_label(categories[0])
    return normalise_label(path.stem)


def utterance_key(text):
    return " ".join(text.split()).casefold()


def read_examples(corpus_dir):
    """Return [(utterance, label)] in sorted-file order, deduplicated, and stats."""
    files = sorted(corpus_dir.glob("*.yml"))
    if not files:
        sys.exit(f"no .yml files in {corpus_dir}")
    examples = []
    seen = {}  # key -> label of first occurrence
    stats = {"files": len(files), "skipped_conversations": 0,
             "duplicates_same_label": 0, "duplicates_cross_label": 0}
    for path in files:
        with path.open(encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        label = file_label(path, doc)
        conversations = (doc or {}).get("conversations") or []
        for conv in conversations:
            if not isinstance(conv, list):
                # e.g. one malformed entry in trivia.yml is a bare string
                stats["skipped_conversations"] += 1
                continue
            for item in conv[0::2]:
                if not isinstance(item, str):
                    continue
                text = item.strip()
                if not text:
                    continue
                key = utterance_key(text)
                if key in seen:
                    if seen[key] == label:
                        stats["duplicates_same_label"] += 1
                    else:
                        stats["duplicates_cross_label"] += 1
                    continue
                seen[key] = label
                examples.append((text, label))
    return examples, stats


def split(examples, rng):
    by_label = {}
    for text, label in examples:
        by_label.setdefault(label, []).append(text)
    train, valid = [], []
    counts = {}
    for label in sorted(by_label):
        texts = sorted(by_label[label])
        rng.shuffle(texts)
        n = len(texts)
        n_valid = round(VALID_FRACTION * n)
        if n >= 2:
            n_valid = max(n_valid, 1)
        valid += [(t, label) for t in texts[:n_valid]]
        train += [(t, label) for t in texts[n_valid:]]
        counts[label] = (n - n_valid, n_valid)
    rng.shuffle(train)
    rng.shuffle(valid)
    return train, valid, counts


def to_line(system, text, label):
    obj = {"messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": text},
        {"role": "assistant", "content": label},
    ]}
    return json.dumps(obj, ensure_ascii=False) + "\n"


def write_lines(path, lines):
    data = "".join(lines).encode("utf-8")
    path.write_bytes(data)
    return len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus_dir", nargs="?", type=Path,
                    help="directory with the English .yml files "
                         "(default: chatterbot_corpus/data/english of the installed package)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "examples" / "data",
                    help="output directory (default: %(default)s)")
    args = ap.parse_args()

    corpus_dir = args.corpus_dir or default_corpus_dir()
    examples, stats = read_examples(corpus_dir)
    labels = sorted({label for _, label in examples})
    system = ("Classify the topic of the user's message. Answer with one word: "
              + ", ".join(labels) + ".")

    rng = random.Random(SEED)
    train, valid, counts = split(examples, rng)

    train_lines = [to_line(system, t, l) for t, l in train]
    valid_lines = [to_line(system, t, l) for t, l in valid]
    total = sum(len(s.encode("utf-8")) for s in train_lines + valid_lines)
    if total >= MAX_TOTAL_BYTES:
        sys.exit(f"output would be {total} bytes, limit is {MAX_TOTAL_BYTES}")

    args.out.mkdir(parents=True, exist_ok=True)
    train_bytes = write_lines(args.out / "topics-train.jsonl", train_lines)
    valid_bytes = write_lines(args.out / "topics-valid.jsonl", valid_lines)

    bad = list(train_lines[:BAD_LINE_COUNT])
    broken = bad[BAD_LINE_NUMBER - 1].rstrip("\n")
    bad[BAD_LINE_NUMBER - 1] = broken[: len(broken) // 2] + "\n"
    write_lines(args.out / "bad-line.jsonl", bad)

    print(f"corpus: {corpus_dir} ({stats['files']} files)")
    print(f"skipped non-list conversations: {stats['skipped_conversations']}; "
          f"dropped duplicate utterances: {stats['duplicates_same_label']} same label, "
          f"{stats['duplicates_cross_label']} other label")
    print(f"{'label':<16}{'train':>7}{'valid':>7}")
    for label in labels:
        tr, va = counts[label]
        print(f"{label:<16}{tr:>7}{va:>7}")
    print(f"{'total':<16}{len(train_lines):>7}{len(valid_lines):>7}")
    print(f"bytes: train {train_bytes}, valid {valid_bytes}, total {train_bytes + valid_bytes}")
    print(f"wrote {args.out}/topics-train.jsonl, topics-valid.jsonl, bad-line.jsonl")


if __name__ == "__main__":
    main()
