"""The OpenAI Python SDK against `ftsweep serve`: every step uses the typed client and checks that
the answers parse into the SDK's own types. Run by tests/sdk/run.sh, which starts the server and
passes its URL in FTSWEEP_URL; prints "N passed, M failed" last and exits 1 if any step failed."""

import os
import sys
import time
import traceback
from pathlib import Path

import openai
from openai.types import FileObject, Model
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
URL = os.environ["FTSWEEP_URL"]
KEY = os.environ.get("FTSWEEP_KEY", "sdk-key")

client = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)
state = {}


def labels():
    """The 21 topic labels: the replies of the training file."""
    import json

    lines = (DATA / "topics-train.jsonl").read_text().splitlines()
    return {json.loads(line)["messages"][-1]["content"] for line in lines if line.strip()}


def test_files_create():
    for name in ("train", "valid"):
        with open(DATA / f"topics-{name}.jsonl", "rb") as f:
            file = client.files.create(file=f, purpose="fine-tune")
        assert isinstance(file, FileObject), type(file)
        assert file.id.startswith("file-") and file.purpose == "fine-tune" and file.bytes > 0, file
        state[name] = file.id
    listed = [f.id for f in client.files.list(purpose="fine-tune")]
    assert state["train"] in listed and state["valid"] in listed, listed


def test_jobs_create():
    job = client.fine_tuning.jobs.create(
        model="local/ngram",
        training_file=state["train"],
        validation_file=state["valid"],
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 32}}},
        metadata={"suite": "sdk", "cell": "1"},
        suffix="sdk",
        seed=42,
    )
    assert isinstance(job, FineTuningJob), type(job)
    assert job.status == "validating_files" and job.seed == 42, job
    assert job.method.supervised.hyperparameters.n_epochs == 2, job.method
    state["job"] = job.id


def test_jobs_retrieve_until_succeeded():
    deadline = time.time() + 120
    while True:
        job = client.fine_tuning.jobs.retrieve(state["job"])
        assert isinstance(job, FineTuningJob)
        if job.status in ("succeeded", "failed", "cancelled") or time.time() > deadline:
            break
        time.sleep(0.2)
    assert job.status == "succeeded", job
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:local/ngram:local:sdk:"), job
    assert job.trained_tokens and job.finished_at and job.result_files, job
    assert job.hyperparameters.batch_size == 32, job.hyperparameters
    state["model"] = job.fine_tuned_model
    content = client.files.content(job.result_files[0]).text
    assert content.startswith("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"), content[:80]


def test_jobs_list_with_metadata():
    found = list(client.fine_tuning.jobs.list(metadata={"suite": "sdk"}))
    assert [j.id for j in found] == [state["job"]], found
    assert all(isinstance(j, FineTuningJob) for j in found)
    none = client.fine_tuning.jobs.list(extra_query={"metadata[suite]": "other"})
    assert none.data == [] and none.has_more is False, none


def test_jobs_list_events():
    events = client.fine_tuning.jobs.list_events(state["job"], limit=100)
    assert all(isinstance(e, FineTuningJobEvent) for e in events.data)
    assert events.data[0].message == "The job has successfully completed", events.data[0]
    metrics = [e for e in events.data if e.type == "metrics"]
    assert metrics and all(e.data["train_loss"] is not None for e in metrics), metrics[:1]
    assert any("full_valid_loss" in e.data for e in metrics)
    # Automatic pagination walks every page.
    every = list(client.fine_tuning.jobs.list_events(state["job"], limit=10))
    assert len(every) > len(events.data) - 1 and every[-1].message.startswith("Created fine-tuning job"), every[-1]


def test_jobs_checkpoints_list():
    page = client.fine_tuning.jobs.checkpoints.list(state["job"])
    assert all(isinstance(c, FineTuningJobCheckpoint) for c in page.data)
    steps = [c.step_number for c in page.data]
    assert steps == sorted(steps, reverse=True) and len(steps) == 2, steps
    newest = page.data[0]
    assert newest.fine_tuned_model_checkpoint.startswith(state["model"] + ":ckpt-step-"), newest
    assert newest.metrics.full_valid_loss is not None and newest.metrics.train_loss is not None, newest.metrics
    state["checkpoint"] = page.data[-1].fine_tuned_model_checkpoint


def test_chat_completions_create():
    topics = labels()
    answer = client.chat.completions.create(
        model=state["model"],
        messages=[{"role": "user", "content": "Who painted the Mona Lisa?"}],
        logprobs=True,
        top_logprobs=3,
        temperature=0,
    )
    assert isinstance(answer, ChatCompletion), type(answer)
    choice = answer.choices[0]
    assert choice.message.content in topics and choice.finish_reason == "stop", choice
    token = choice.logprobs.content[0]
    assert token.token == choice.message.content and token.logprob <= 0, token
    assert len(token.top_logprobs) == 3 and token.top_logprobs[0].token == token.token, token.top_logprobs
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0, answer.usage
    old = client.chat.completions.create(model=state["checkpoint"], messages=[{"role": "user", "content": "hi"}])
    assert old.choices[0].message.content in topics, old


def test_models_list():
    models = list(client.models.list())
    assert all(isinstance(m, Model) for m in models)
    ids = [m.id for m in models]
    assert "local/ngram" in ids and state["model"] in ids, ids
    assert client.models.retrieve(state["model"]).owned_by


def test_errors_are_the_sdk_exceptions():
    try:
        client.files.retrieve("file-missing")
        raise AssertionError("no error for a missing file")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.body["param"] == "id", e.body
    try:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=state["train"])
        raise AssertionError("no error for a base model that is not served")
    except openai.BadRequestError as e:
        assert e.code == "model_not_available" and e.param == "model", e.body
    wrong = openai.OpenAI(base_url=URL, api_key="not-the-key", max_retries=0)
    try:
        wrong.models.list()
        raise AssertionError("no error for a wrong key")
    except openai.AuthenticationError as e:
        assert e.code == "invalid_api_key" and "not-the-key" not in str(e), str(e)
        assert e.request_id and e.request_id.startswith("req_"), e.request_id


def main():
    steps = [f for name, f in globals().items() if name.startswith("test_") and callable(f)]
    passed = failed = 0
    started = time.time()
    print(f"openai {openai.__version__} against {URL}")
    for step in steps:
        t0 = time.time()
        try:
            step()
            passed += 1
            print(f"ok    {step.__name__} ({time.time() - t0:.2f}s)")
        except Exception:
            failed += 1
            print(f"FAIL  {step.__name__} ({time.time() - t0:.2f}s)")
            traceback.print_exc(limit=3)
    print(f"({time.time() - started:.1f}s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
