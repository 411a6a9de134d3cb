"""Together's Python SDK (package `together`, 3.x) against `ftsweep serve --protocol together`:
every step uses the typed client the way ftsweep's Together provider drives the API, and checks
that the answers parse into the SDK's own types. Run by tests/sdk/together.sh, which starts the
server and passes its URL in FTSWEEP_URL (`http://ADDR/v1`); prints "N passed, M failed" last and
exits 1 if any step failed.

Not driven through the SDK's typed resources: dedicated endpoints. Package 3.x's `endpoints`
resource is the v2 API (`/v2/projects/{project}/endpoints/...`), which the server does not serve;
the v1 `/v1/endpoints` calls go through the same client's generic `get`/`post`/`delete`."""

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import httpx
import together
from together.types import FileResponse
from together.types.chat.chat_completion import ChatCompletion
from together.types.finetune_response import FinetuneResponse

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
URL = os.environ["FTSWEEP_URL"]
KEY = os.environ.get("FTSWEEP_KEY", "sdk-key")
BASE = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"

# Package 3.x puts `/v1/` into every path: its base URL is the server's root.
client = together.Together(base_url=URL.removesuffix("/v1"), api_key=KEY, max_retries=0, timeout=30)
state = {}


def labels():
    """The topic labels: the replies of the training file."""
    lines = (DATA / "topics-train.jsonl").read_text().splitlines()
    return {json.loads(line)["messages"][-1]["content"] for line in lines if line.strip()}


def error(e):
    """The `error` object of an error answer."""
    return e.body.get("error", e.body) if isinstance(e.body, dict) else {}


def wait(job_id, done, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.retrieve(job_id)
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} is still {job.status}"
        time.sleep(0.2)


def test_files_upload():
    for name in ("train", "valid"):
        file = client.files.upload(DATA / f"topics-{name}.jsonl", purpose="fine-tune")
        assert isinstance(file, FileResponse), type(file)
        assert file.id.startswith("file-") and file.purpose == "fine-tune", file
        assert file.processing_status == "COMPLETED" and file.bytes > 0, file
        state[name] = file.id
    listed = [f.id for f in client.files.list().data]
    assert state["train"] in listed and state["valid"] in listed, listed


def test_files_upload_again_is_the_same_file():
    # The checksum matches a complete upload: the server answers 409 and the SDK returns that file.
    again = client.files.upload(DATA / "topics-train.jsonl", purpose="fine-tune")
    assert again.id == state["train"], (again.id, state["train"])
    assert len([f for f in client.files.list().data if f.filename == "topics-train.jsonl"]) == 1
    try:
        client.files.upload(DATA / "topics-train.jsonl", purpose="fine-tune", raise_if_already_exists=True)
        raise AssertionError("a second upload of the same bytes was accepted")
    except together.lib.resources.files.FileAlreadyExistsError as e:
        assert e.file_id == state["train"], e.file_id


def test_files_retrieve_and_content():
    file = client.files.retrieve(state["train"])
    assert isinstance(file, FileResponse) and file.file_type == "jsonl", file
    content = client.files.content(state["train"]).read()
    assert hashlib.sha256(content).digest() == hashlib.sha256((DATA / "topics-train.jsonl").read_bytes()).digest()


def test_fine_tuning_create():
    # As ftsweep does: a LoRA job with the sweep's knobs and the run id in the suffix. The SDK
    # asks for the model's limits and a price estimate first.
    job = client.fine_tuning.create(
        model=BASE,
        training_file=state["train"],
        validation_file=state["valid"],
        n_epochs=2,
        n_evals=2,
        n_checkpoints=2,
        batch_size=16,
        learning_rate=2e-5,
        lora=True,
        lora_r=8,
        suffix="run1-1",
        random_seed=7,
    )
    assert job.id.startswith("ft-") and job.status == "pending", job
    assert job.output_name.startswith("ftsweep-local/Meta-Llama-3.1-8B-Instruct-Reference-run1-1-"), job
    state["job"] = job.id
    state["output"] = job.output_name


def test_fine_tuning_create_refuses_bad_fields():
    for fields, param in [
        ({"n_epochs": 21}, "n_epochs"),
        ({"learning_rate": 1.0}, "learning_rate"),
        ({"lora": True, "lora_r": 128}, "training_type.lora_r"),
        ({"suffix": "x" * 41}, "suffix"),
    ]:
        try:
            client.fine_tuning.create(model=BASE, training_file=state["train"], **fields)
            raise AssertionError(f"{fields} was accepted")
        except together.BadRequestError as e:
            assert error(e).get("param") == param, (fields, e.body)
        except ValueError:
            # The SDK's own checks of the limits it was served (lora_r against max_rank).
            pass


def test_fine_tuning_follow_to_completed():
    job = wait(state["job"], lambda j: j.status in ("completed", "error", "cancelled"))
    assert isinstance(job, FinetuneResponse), type(job)
    assert job.status == "completed", job
    assert job.n_epochs == 2 and job.n_evals == 2 and job.batch_size == 16 and job.learning_rate == 2e-5, job
    assert job.training_type.lora_r == 8 and job.training_type.type == "Lora", job.training_type
    assert job.token_count > 0 and job.total_price == job.token_count * 480, (job.token_count, job.total_price)
    assert job.epochs_completed == 2 and job.steps_completed == job.total_steps > 0, job
    listed = [j.id for j in client.fine_tuning.list().data]
    assert state["job"] in listed, listed
    found = [j for j in client.fine_tuning.list().data if j.suffix == "run1-1"]
    assert [j.id for j in found] == [state["job"]], found


def test_fine_tuning_events_metrics_checkpoints():
    events = client.fine_tuning.list_events(state["job"]).data
    kinds = [e.type for e in events]
    for kind in ("job_pending", "job_start", "training_start", "epoch_complete", "checkpoint_save", "job_complete"):
        assert kind in kinds, kinds
    assert kinds[0] == "job_pending" and kinds[-1] == "job_complete", kinds
    metrics = client.fine_tuning.list_metrics(state["job"]).metrics
    train = [m for m in metrics if "train/loss" in m]
    evals = [m for m in metrics if "eval/loss" in m]
    assert train and all("train/global_step" in m for m in metrics), metrics[:3]
    assert len(evals) == 2, evals
    checkpoints = client.fine_tuning.list_checkpoints(state["job"]).data
    kinds = [c.checkpoint_type for c in checkpoints]
    assert kinds == ["Final", "Intermediate"], checkpoints
    state["checkpoint"] = f"{state['job']}:{checkpoints[1].step}"


def test_chat_with_the_fine_tuned_model():
    answer = client.chat.completions.create(
        model=state["output"],
        messages=[{"role": "user", "content": "The striker scored twice in the final minutes of the match."}],
        max_tokens=8,
        temperature=0,
    )
    assert isinstance(answer, ChatCompletion), type(answer)
    assert answer.choices[0].message.content in labels(), answer.choices[0].message
    assert answer.usage.total_tokens > 0, answer.usage


def test_a_checkpoint_answers_only_through_an_endpoint():
    messages = [{"role": "user", "content": "Stocks fell sharply after the central bank raised rates."}]
    try:
        client.chat.completions.create(model=state["checkpoint"], messages=messages, max_tokens=8)
        raise AssertionError("a checkpoint answered serverless")
    except together.NotFoundError as e:
        assert error(e).get("code") == "model_not_available", e.body
    body = {"model": state["checkpoint"], "hardware": "1x_nvidia_h100_80gb_sxm",
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}, "display_name": "ftsweep-sdk", "state": "STARTED"}
    endpoint = client.post("/v1/endpoints", body=body, cast_to=httpx.Response).json()
    assert endpoint["object"] == "endpoint" and endpoint["state"] == "PENDING", endpoint
    deadline = time.monotonic() + 30
    while client.get(f"/v1/endpoints/{endpoint['id']}", cast_to=httpx.Response).json()["state"] != "STARTED":
        assert time.monotonic() < deadline, "the endpoint never started"
        time.sleep(0.1)
    mine = client.get("/v1/endpoints?type=dedicated&mine=true", cast_to=httpx.Response).json()["data"]
    assert [e["id"] for e in mine] == [endpoint["id"]], mine
    answer = client.chat.completions.create(model=endpoint["name"], messages=messages, max_tokens=8)
    assert answer.choices[0].message.content in labels(), answer
    gone = client.delete(f"/v1/endpoints/{endpoint['id']}", cast_to=httpx.Response)
    assert gone.status_code == 204, gone
    try:
        client.chat.completions.create(model=endpoint["name"], messages=messages, max_tokens=8)
        raise AssertionError("a deleted endpoint answered")
    except together.NotFoundError:
        pass


def test_fine_tuning_cancel():
    job = client.fine_tuning.create(model=BASE, training_file=state["train"], n_epochs=3, batch_size=8, suffix="run2-1")
    cancelled = client.fine_tuning.cancel(job.id)
    assert cancelled.status in ("cancel_requested", "cancelled"), cancelled
    job = wait(job.id, lambda j: j.status == "cancelled")
    assert job.status == "cancelled", job


def main():
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, test in tests:
        try:
            test()
            passed += 1
            print(f"ok   {name}")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
