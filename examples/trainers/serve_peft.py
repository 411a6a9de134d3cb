#!/usr/bin/env python3
"""A small OpenAI-compatible server over transformers + PEFT, for machines without vLLM.

It answers the requests ftsweep's `provider = "command"` sends, with vLLM's shapes and codes:
  GET  /v1/models                  the base model (by its name) and the loaded adapters
  POST /v1/chat/completions        greedy decoding with the tokenizer's chat template; `max_tokens`
                                   (or `max_completion_tokens`), `stop`; `"model"` names the base
                                   model or a loaded adapter
  POST /v1/load_lora_adapter       {"lora_name": N, "lora_path": DIR}: 200, plain text; 400 if N
                                   is already loaded; 404 if DIR holds no adapter
  POST /v1/unload_lora_adapter     {"lora_name": N}: 200, plain text; 404 if N is not loaded
  GET  /health                     200 once the model is loaded

One request generates at a time (a lock), which is what a CPU or a single small GPU can do.

    python serve_peft.py --model DIR_OR_HF_ID [--served-model-name NAME] [--port 8000]
                         [--host 127.0.0.1] [--api-key KEY]

--port 0 picks a free port. The URL is printed on stdout once the model is loaded.
With --api-key (or VLLM_API_KEY), every /v1 request needs `Authorization: Bearer KEY`.
"""

import argparse
import hmac
import json
import os
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 16 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, status, message, err_type, param=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param

    def body(self):
        return {"error": {"message": self.message, "type": self.err_type, "param": self.param, "code": self.status}}


def text_of(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    raise ApiError(400, "message content must be a string or a list of text parts", "BadRequestError", "messages")


class Models:
    """The base model and the LoRA adapters loaded on it; every use holds the lock."""

    def __init__(self, model_path, served_name, device, dtype):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.lock = threading.Lock()
        self.base_name = served_name
        self.model_path = model_path
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if not self.tokenizer.chat_template:
            sys.exit(f"serve_peft: error: --model {model_path}: its tokenizer has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        self.max_len = getattr(self.model.config, "max_position_embeddings", None)
        self.adapters = {}  # name -> path, in load order
        self.created = int(time.time())
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos:
            eos.append(self.tokenizer.eos_token_id)
        self.eos = eos
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    def list(self):
        with self.lock:
            cards = [{"id": self.base_name, "object": "model", "created": self.created, "owned_by": "serve_peft",
                      "root": self.model_path, "parent": None, "max_model_len": self.max_len}]
            for name, path in self.adapters.items():
                cards.append({"id": name, "object": "model", "created": self.created, "owned_by": "serve_peft",
                              "root": path, "parent": self.base_name})
            return {"object": "list", "data": cards}

    def load(self, name, path):
        if not name or not path:
            raise ApiError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        with self.lock:
            if name in self.adapters:
                raise ApiError(
                    400,
                    f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in "
                    "place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            config = os.path.join(path, "adapter_config.json")
            if not os.path.isfile(config):
                raise ApiError(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
            try:
                with open(config, encoding="utf-8") as f:
                    peft_type = json.load(f).get("peft_type")
            except (OSError, ValueError, AttributeError) as e:
                raise ApiError(500, f"Loading lora {name} failed: {config}: {e}", "InternalServerError") from e
            if peft_type != "LORA":
                raise ApiError(500, f"Loading lora {name} failed: {path} holds a {peft_type} adapter, not a LoRA one",
                               "InternalServerError")
            try:
                from peft import PeftModel

                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(path, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            except Exception as e:  # the adapter does not fit this model, or is not a PEFT adapter
                raise ApiError(500, f"Loading lora {name} failed: {type(e).__name__}: {e}", "InternalServerError") from e
            self.adapters[name] = path
            return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name):
        if not name:
            raise ApiError(400, "'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput")
        with self.lock:
            if name not in self.adapters:
                raise ApiError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            if len(self.adapters) == 1:
                # The last one: take the LoRA layers out and keep the plain base model.
                self.model = self.model.unload().eval()
            else:
                self.model.delete_adapter(name)
            del self.adapters[name]
            return f"Success: LoRA adapter '{name}' removed successfully."

    def chat(self, body):
        name = body.get("model") or self.base_name
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list", "BadRequestError", "messages")
        if body.get("stream"):
            raise ApiError(400, "streaming is not supported by serve_peft", "BadRequestError", "stream")
        if body.get("n", 1) != 1:
            raise ApiError(400, "only n = 1 is supported", "BadRequestError", "n")
        conv = []
        for m in messages:
            if not isinstance(m, dict) or "role" not in m:
                raise ApiError(400, "each message needs a 'role'", "BadRequestError", "messages")
            conv.append({"role": m["role"], "content": text_of(m.get("content"))})
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ApiError(400, "'max_tokens' must be a whole number of at least 1", "BadRequestError", "max_tokens")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)

        with self.lock:
            if name != self.base_name and name not in self.adapters:
                raise ApiError(404, f"The model `{name}` does not exist.", "NotFoundError", "model")
            enc = self.tokenizer.apply_chat_template(conv, add_generation_prompt=True, return_dict=True,
                                                     return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            prompt_tokens = int(enc["input_ids"].shape[1])
            if self.max_len:
                max_tokens = max(1, min(max_tokens, self.max_len - prompt_tokens))
            gen = dict(max_new_tokens=max_tokens, do_sample=False, eos_token_id=self.eos or None,
                       pad_token_id=self.pad)
            with self.torch.inference_mode():
                if name == self.base_name and self.adapters:
                    with self.model.disable_adapter():
                        out = self.model.generate(**enc, **gen)
                else:
                    if name != self.base_name:
                        self.model.set_adapter(name)
                    out = self.model.generate(**enc, **gen)
        new = out[0, prompt_tokens:].tolist()
        finish = "length"
        if new and new[-1] in self.eos:
            finish = "stop"
            new = new[:-1]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for s in stop:
            if s and s in text:
                text = text[: text.index(s)]
                finish = "stop"
        completion_tokens = len(out[0]) - prompt_tokens
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def make_handler(models, api_key):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "serve_peft"

        def log_message(self, fmt, *args):
            sys.stderr.write("serve_peft: %s %s\n" % (self.address_string(), fmt % args))

        def send(self, status, payload):
            if isinstance(payload, str):
                data, ctype = payload.encode(), "text/plain; charset=utf-8"
            else:
                data, ctype = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            if not api_key or not self.path.startswith("/v1"):
                return True
            got = self.headers.get("Authorization", "")
            return hmac.compare_digest(got.encode(), f"Bearer {api_key}".encode())

        def raw_body(self):
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise ApiError(400, "bad Content-Length", "BadRequestError")
            if n > MAX_BODY:
                self.close_connection = True
                raise ApiError(413, f"request body over {MAX_BODY} bytes", "BadRequestError")
            return self.rfile.read(n) if n > 0 else b""

        def route(self, method):
            path = self.path.split("?", 1)[0]
            raw = self.raw_body() if method == "POST" else b""  # read whatever comes next: the connection stays usable
            if not self.authorized():
                return self.send(401, {"error": "Unauthorized"})

            def body():
                try:
                    obj = json.loads(raw or b"null")
                except ValueError as e:
                    raise ApiError(400, f"the body is not JSON: {e}", "BadRequestError")
                if not isinstance(obj, dict):
                    raise ApiError(400, "the body must be a JSON object", "BadRequestError")
                return obj

            try:
                if method == "GET" and path == "/health":
                    return self.send(200, "")
                if method == "GET" and path == "/v1/models":
                    return self.send(200, models.list())
                if method == "POST" and path == "/v1/chat/completions":
                    return self.send(200, models.chat(body()))
                if method == "POST" and path == "/v1/load_lora_adapter":
                    b = body()
                    return self.send(200, models.load(b.get("lora_name"), b.get("lora_path")))
                if method == "POST" and path == "/v1/unload_lora_adapter":
                    return self.send(200, models.unload(body().get("lora_name")))
                raise ApiError(404, f"no route {method} {path}", "NotFoundError")
            except ApiError as e:
                return self.send(e.status, e.body())
            except Exception as e:  # a generation failure: say so, keep serving
                return self.send(500, ApiError(500, f"{type(e).__name__}: {e}", "InternalServerError").body())

        def do_GET(self):
            self.route("GET")

        def do_POST(self):
            try:
                self.route("POST")
            except ApiError as e:
                self.send(e.status, e.body())

    return Handler


def main():
    p = argparse.ArgumentParser(description="OpenAI-compatible chat completions over transformers + PEFT adapters")
    p.add_argument("--model", required=True, help="base model: a local directory or a Hugging Face id")
    p.add_argument("--served-model-name", default=None, help="the base model's name in requests (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"), help="require this bearer key (default: $VLLM_API_KEY)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if there is one)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="auto: bfloat16 on a GPU that has it, else float32")
    a = p.parse_args()

    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = a.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    models = Models(a.model, a.served_model_name or a.model, device, getattr(torch, dtype))
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serve_peft: warning: listening on {a.host} without TLS", file=sys.stderr)
    server = ThreadingHTTPServer((a.host, a.port), make_handler(models, a.api_key))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    print(f"serve_peft: serving {models.base_name} on {device} at http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
