"""The OpenAI Python SDK's Azure clients against `ftsweep serve --protocol azure`: the `AzureOpenAI`
client (azure_endpoint, api_key, api_version: the dated /openai/... paths and
/openai/deployments/{name}/chat/completions) and the plain `OpenAI` client on {endpoint}/openai/v1/
as Microsoft's v1 docs show it. Files, fine-tuning jobs, events, checkpoints, cancel, and chat
completions through a deployment made with plain HTTP PUT on the server's Azure Resource Manager
routes. Every answer must parse into the SDK's own types. Run by tests/sdk/azure.sh, which starts
the server and passes its URL in FTSWEEP_URL; prints "N passed, M failed" last and exits 1 if any
step failed."""

import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import openai
from openai.types import FileObject
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
URL = os.environ["FTSWEEP_URL"].rstrip("/")
KEY = os.environ.get("FTSWEEP_KEY", "sdk-key")
BASE = "gpt-4.1-mini-2025-04-14"
ACCOUNT = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sdk-rg"
    "/providers/Microsoft.CognitiveServices/accounts/sdkres"
)
DEPLOYMENT = "ftsweep-sdk0123456789ab"

azure = openai.AzureOpenAI(azure_endpoint=URL, api_key=KEY, api_version="2024-10-21", max_retries=0, timeout=30)
v1 = openai.OpenAI(base_url=f"{URL}/openai/v1/", api_key=KEY, max_retries=0, timeout=30)
state = {}


def arm(method, name, body=None, api_version="2024-10-01"):
    """A plain HTTP request to the ARM deployment routes; returns (status, JSON or None)."""
    url = f"{URL}{ACCOUNT}/deployments/{name}?api-version={api_version}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def wait(what, check, seconds=120):
    deadline = time.time() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_files_create_and_processed():
    for name, client in (("train", v1), ("valid", azure)):
        with open(DATA / f"topics-{name}.jsonl", "rb") as f:
            file = client.files.create(file=f, purpose="fine-tune")
        assert isinstance(file, FileObject), type(file)
        assert file.id.startswith("file-") and file.purpose == "fine-tune" and file.bytes > 0, file
        assert file.status in ("uploaded", "processed"), file
        state[name] = file.id
    for name in ("train", "valid"):
        done = wait(f"{name} processed", lambda: v1.files.retrieve(state[name]).status == "processed")
        assert done
    listed = [f.id for f in azure.files.list(purpose="fine-tune")]
    assert state["train"] in listed and state["valid"] in listed, listed


def test_jobs_create_with_the_azure_client():
    job = azure.fine_tuning.jobs.create(
        model=BASE,
        training_file=state["train"],
        validation_file=state["valid"],
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        metadata={"suite": "azure-sdk", "run": "r1"},
        suffix="r1-1",
        seed=7,
    )
    assert isinstance(job, FineTuningJob), type(job)
    assert job.model == BASE and job.seed == 7 and job.metadata == {"suite": "azure-sdk", "run": "r1"}, job
    assert job.user_provided_suffix == "r1-1", job
    state["job"] = job.id


def test_jobs_retrieve_until_succeeded_with_the_v1_client():
    job = wait("the job", lambda: (j := v1.fine_tuning.jobs.retrieve(state["job"])).status == "succeeded" and j)
    assert isinstance(job, FineTuningJob)
    assert re.fullmatch(re.escape(BASE) + r"\.ft-[0-9a-f]{32}", job.fine_tuned_model), job.fine_tuned_model
    state["model"] = job.fine_tuned_model
    listed = [j.id for j in azure.fine_tuning.jobs.list(limit=10)]
    assert state["job"] in listed, listed


def test_list_events():
    for client in (v1, azure):
        events = list(client.fine_tuning.jobs.list_events(state["job"], limit=200))
        assert events and all(isinstance(e, FineTuningJobEvent) for e in events)
        messages = " | ".join(e.message for e in events)
        assert state["model"] in messages and "ft:local" not in messages, messages
        assert any(e.type == "metrics" for e in events), messages


def test_checkpoints_list():
    checkpoints = list(v1.fine_tuning.jobs.checkpoints.list(state["job"]))
    assert len(checkpoints) == 2, checkpoints
    for c in checkpoints:
        assert isinstance(c, FineTuningJobCheckpoint), type(c)
        assert re.fullmatch(r"ftchkpt-[0-9a-f]{32}", c.id), c.id
        assert c.fine_tuning_job_id == state["job"] and c.metrics.step == float(c.step_number), c
    assert checkpoints[0].fine_tuned_model_checkpoint == state["model"], checkpoints[0]
    assert checkpoints[1].fine_tuned_model_checkpoint.startswith(state["model"] + ":ckpt-step-"), checkpoints[1]
    state["checkpoint"] = checkpoints[1]
    page = azure.fine_tuning.jobs.checkpoints.list(state["job"], after=checkpoints[0].id)
    assert [c.id for c in page.data] == [checkpoints[1].id], page


def test_cancel():
    job = v1.fine_tuning.jobs.create(
        model=BASE,
        training_file=state["train"],
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 30}}},
    )
    cancelled = azure.fine_tuning.jobs.cancel(job.id)
    assert isinstance(cancelled, FineTuningJob) and cancelled.status == "cancelled", cancelled


def test_chat_refused_without_a_deployment():
    for client in (v1, azure):
        try:
            client.chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("no error for a chat without a deployment")
        except openai.NotFoundError as e:
            assert e.code == "DeploymentNotFound", e.body


def test_deploy_with_arm_then_chat():
    body = {
        "sku": {"name": "DeveloperTier", "capacity": 50},
        "properties": {"model": {"format": "OpenAI", "name": state["model"], "version": "1"}},
    }
    status, created = arm("PUT", DEPLOYMENT, body)
    assert status == 201 and created["properties"]["provisioningState"] == "Creating", (status, created)
    status, again = arm("PUT", DEPLOYMENT, body)
    assert status == 200, (status, again)
    wait("the deployment", lambda: arm("GET", DEPLOYMENT)[1]["properties"]["provisioningState"] == "Succeeded")
    for client in (v1, azure):
        chat = client.chat.completions.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": "hello there"}], max_tokens=20
        )
        assert isinstance(chat, ChatCompletion), type(chat)
        assert chat.model == state["model"], chat.model
        assert chat.choices[0].message.content, chat
        extra = chat.model_extra or {}
        assert extra.get("prompt_filter_results"), extra
    # A checkpoint deploys by its ftchkpt id.
    body["properties"]["model"]["name"] = state["checkpoint"].id
    status, created = arm("PUT", "ftsweep-sdk-checkpoint", body, api_version="2025-06-01")
    assert status == 201, (status, created)
    wait("the checkpoint's deployment", lambda: arm("GET", "ftsweep-sdk-checkpoint")[1]["properties"]["provisioningState"] == "Succeeded")
    chat = v1.chat.completions.create(model="ftsweep-sdk-checkpoint", messages=[{"role": "user", "content": "hi"}])
    assert chat.model == state["checkpoint"].fine_tuned_model_checkpoint, chat.model


def test_delete_deployments():
    for name in (DEPLOYMENT, "ftsweep-sdk-checkpoint"):
        status, _ = arm("DELETE", name)
        assert status == 202, status
        wait(f"{name} gone", lambda: arm("GET", name)[0] == 404)
        assert arm("DELETE", name)[0] == 204
    try:
        v1.chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("no error for a chat on a deleted deployment")
    except openai.NotFoundError as e:
        assert e.code == "DeploymentNotFound", e.body


def test_errors():
    try:
        v1.fine_tuning.jobs.create(model=BASE, training_file=state["train"], suffix="x" * 41)
        raise AssertionError("no error for a 41-character suffix")
    except openai.BadRequestError as e:
        assert e.param == "suffix", e.body
    wrong = openai.AzureOpenAI(azure_endpoint=URL, api_key="not-the-key", api_version="2024-10-21", max_retries=0)
    try:
        wrong.files.list()
        raise AssertionError("no error for a wrong key")
    except openai.AuthenticationError as e:
        assert e.code == "401" and "not-the-key" not in str(e), str(e)
    status, body = arm("GET", DEPLOYMENT, api_version="2024-10-21")
    assert status == 400 and body["error"]["code"] == "NoRegisteredProviderFound", (status, body)


def main():
    steps = [f for name, f in globals().items() if name.startswith("test_") and callable(f)]
    passed = failed = 0
    started = time.time()
    print(f"openai {openai.__version__} (AzureOpenAI and OpenAI on /openai/v1/) against {URL}")
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
