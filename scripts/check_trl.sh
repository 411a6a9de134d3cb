#!/usr/bin/env bash
# Sweeps 2 real TRL runs with ftsweep's `provider = "command"`, end to end, on the CPU:
# a virtual environment with torch, transformers, trl and peft (pinned; made once, then reused),
# a tiny randomly initialised Llama built here from the example data (no download),
# examples/trainers/serve_peft.py as the inference server, and examples/trainers/trl_sft.py as
# the trainer, run by `ftsweep run` on the local engine. Prints the leaderboard; exits non-zero
# if any step fails.
#
#   bash scripts/check_trl.sh            # FTSWEEP_CACHE (default ~/.cache/ftsweep) holds the venv
#   KEEP=1 bash scripts/check_trl.sh     # keep the work folder (runs, database, logs)
#
# The venv takes about 6 GB: PyPI's Linux torch wheel is the CUDA build and does not import
# without its nvidia-* packages, even on a machine without a GPU.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FTSWEEP_CACHE:-$HOME/.cache/ftsweep}
VENV=$CACHE/trl-venv
PY=$VENV/bin/python
PINS="torch==2.15.0 transformers==5.23.0 trl==1.16.0 peft==0.21.2 tokenizers==0.23.3 accelerate==1.15.0 datasets==5.2.0"
TRAINERS=$ROOT/examples/trainers
DATA=$ROOT/examples/data

say() { printf 'check_trl: %s\n' "$*" >&2; }
now() { date +%s; }

# --- 1. the virtual environment -------------------------------------------------------------
t0=$(now)
if [ -x "$PY" ] && [ "$(cat "$VENV/.ftsweep-pins" 2>/dev/null)" = "$PINS" ]; then
    say "reusing $VENV"
else
    say "installing $PINS into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --disable-pip-version-check $PINS
    echo "$PINS" > "$VENV/.ftsweep-pins"
    say "installed in $(( $(now) - t0 )) s, $(du -sh "$VENV" | cut -f1)"
fi

# --- 2. a work folder, and the clean-up of everything started here ---------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-trl.XXXXXX")
SERVER_PID=
cleanup() {
    status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
        say "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME=$WORK/hf TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: far faster than two contended ones here

# --- 3. the tiny model ----------------------------------------------------------------------
t1=$(now)
"$PY" "$TRAINERS/make_tiny_model.py" --data "$DATA/topics-train.jsonl" --data "$DATA/topics-valid.jsonl" \
    --out "$WORK/tiny" 2>"$WORK/make_tiny_model.log" >&2
say "tiny model built in $(( $(now) - t1 )) s"

# --- 4. the inference server, on a free loopback port, with a key ---------------------------
export CHECK_TRL_KEY=check-trl-$RANDOM$RANDOM
"$PY" "$TRAINERS/serve_peft.py" --model "$WORK/tiny" --port 0 --api-key "$CHECK_TRL_KEY" \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
URL=
for _ in $(seq 240); do
    URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*/v1' "$WORK/serve.out" 2>/dev/null || true)
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { say "serve_peft.py died:"; tail -20 "$WORK/serve.log" >&2; exit 1; }
    sleep 0.5
done
[ -n "$URL" ] || { say "serve_peft.py printed no URL in 120 s"; exit 1; }
say "serve_peft.py at $URL"

# --- 5. ftsweep -----------------------------------------------------------------------------
FTSWEEP=${FTSWEEP:-}
if [ -z "$FTSWEEP" ]; then
    # Built (or found up to date) from this tree, never an older binary left in target/.
    say "building ftsweep (cargo build --release)"
    (cd "$ROOT" && cargo build --release --locked --bin ftsweep)
    FTSWEEP=$ROOT/target/release/ftsweep
fi

# --- 6. the sweep: 2 runs of the TRL recipe -------------------------------------------------
cat >"$WORK/trl.toml" <<EOF
name = "check-trl"
provider = "command"
base_model = "$WORK/tiny"
training_file = "$DATA/topics-train.jsonl"
validation_file = "$DATA/topics-valid.jsonl"
seed = 1

[command]
train = ["$PY", "$TRAINERS/trl_sft.py", "--model", "{base_model}", "--train", "{training_file}",
         "--valid", "{validation_file}", "--epochs", "{n_epochs}", "--lr", "{learning_rate}",
         "--batch-size", "{batch_size}", "--lora-r", "{lora_r}", "--seed", "{seed}",
         "--output-dir", "{output_dir}", "--init-from", "{init_from}",
         "--max-length", "128", "--assistant-only-loss"]
output_root = "$WORK/runs"
inference_url = "$URL"
inference_api_key_env = "CHECK_TRL_KEY"

[engine]
type = "local"

[hyperparameters]
n_epochs = [2]
learning_rate = [0.003, 0.01]
batch_size = [8]
lora_r = [8]

[limits]
max_concurrent = 1
EOF

t2=$(now)
set +e
"$FTSWEEP" --db "$WORK/ftsweep.db" run "$WORK/trl.toml" --yes
rc=$?
set -e
say "ftsweep run: exit $rc in $(( $(now) - t2 )) s"
[ "$rc" = 0 ] || exit "$rc"

# --- 7. what the trainer wrote, and what ftsweep recorded -----------------------------------
"$FTSWEEP" --db "$WORK/ftsweep.db" leaderboard check-trl --json >"$WORK/leaderboard.json"
"$PY" - "$WORK/leaderboard.json" "$WORK/runs" <<'EOF'
import glob, json, os, sys
rows = json.load(open(sys.argv[1]))
runs = [r for r in rows if not r.get("is_baseline")]
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what, file=sys.stderr)
    ok = ok and cond
base = [r for r in rows if r.get("is_baseline")]
check(len(base) == 1 and base[0].get("score") is not None,
      f"the base model evaluated by name: {base[0].get('metric')} = {base[0].get('score')}" if base else "a baseline row")
check(len(runs) == 2, f"2 runs in the leaderboard (got {len(runs)})")
for r in runs:
    model = r.get("model") or ""
    check(r.get("score") is not None, f"{r['run_id']} (learning_rate {r.get('learning_rate')}) scored: {r.get('metric')} = {r.get('score')}")
    check(os.path.isfile(os.path.join(model, "adapter_config.json")), f"{r['run_id']} model is an adapter dir: {model}")
for d in sorted(glob.glob(os.path.join(sys.argv[2], "*", "*", "attempt-*"))):
    lines = open(os.path.join(d, "metrics.jsonl")).read().splitlines()
    evals = sum('"eval_loss"' in l for l in lines)
    ckpts = sorted(os.path.basename(c) for c in glob.glob(os.path.join(d, "checkpoint-*")))
    check(evals >= 2 and ckpts and os.path.isfile(os.path.join(d, "trainer_state.json")),
          f"{os.path.relpath(d, sys.argv[2])}: {len(lines)} metrics lines, {evals} evaluations, {', '.join(ckpts)}")
sys.exit(0 if ok else 1)
EOF
say "done in $(( $(now) - t0 )) s"
