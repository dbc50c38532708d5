"""A local OpenAI-compatible server for tests, demos and benchmarks (no network, no key).

It answers ``POST /v1/chat/completions`` on 127.0.0.1 with whatever a *responder* returns,
and records every request. The default responder answers in DSPy's chat format, filling each
requested output field from its JSON schema, so ``DSPyEngine`` works against it unchanged;
an agent with tools (``dspy.ReAct``) gets a call of its first tool, then ``finish``.

Example:
    >>> from flock.fake_llm import FakeOpenAIServer, dspy_reply
    >>> with FakeOpenAIServer(lambda request: dspy_reply(answer="42")) as server:
    ...     server.base_url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import ast
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "dspy_reply", "schema_responder"]

Responder = Callable[[dict[str, Any]], str]
"""Takes the request's JSON body, returns the assistant message content."""

_OUTPUT_FIELD = re.compile(r"^\s*\d+\. `(\w+)`", re.MULTILINE)
# dspy.ReAct lists its tools in the instructions: "(1) name, whose description is <desc>…</desc>.
# It takes arguments {…}." (the arguments' JSON schemas, as a Python dict).
_REACT_TOOL = re.compile(
    r"^\s*\(\d+\) (\w+)(?:, whose description is <desc>.*</desc>)?\. It takes arguments (\{.*\})\.\s*$",
    re.MULTILINE,
)


def dspy_reply(**fields: Any) -> str:
    """Format ``fields`` the way DSPy's chat adapter expects an answer."""
    parts = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)


def _example(schema: dict[str, Any], defs: dict[str, Any], name: str) -> Any:
    """A value that validates against a (simple) JSON schema."""
    if "$ref" in schema:
        return _example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example(options[0], defs, name)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: _example(sub, defs, key) for key, sub in props.items()}
    if kind == "array":
        return [_example(schema.get("items", {}), defs, name)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return f"fake {name}"


def schema_responder(request: dict[str, Any]) -> str:
    """Answer every output field DSPy asks for with a schema-valid example value.

    DSPy's system message lists the output fields (``Your output fields are: 1. `name` …``)
    and, for structured fields, gives their JSON schema on the field's template line.
    """
    system = _content(request, "system")
    _, _, rest = system.partition("Your output fields are:")
    listing = rest.split("All interactions", 1)[0]
    fields = list(dict.fromkeys(_OUTPUT_FIELD.findall(listing)))
    if "next_tool_name" in fields:
        return _react_step(system, _content(request, "user", last=True))
    answers: dict[str, Any] = {}
    for field in fields:
        schema = _schema_of(system, field)
        answers[field] = (
            _example(schema, schema.get("$defs", {}), field) if schema else f"fake {field}"
        )
    return dspy_reply(**answers)


def _content(request: dict[str, Any], role: str, *, last: bool = False) -> str:
    """The text of the first (or last) message of ``role``."""
    messages = [m for m in request.get("messages", []) if m.get("role") == role]
    if not messages:
        return ""
    content = messages[-1 if last else 0].get("content") or ""
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content)
    return str(content)


def _react_step(system: str, user: str) -> str:
    """A ``dspy.ReAct`` step: the first listed tool, with arguments valid for its schema,
    while the trajectory holds no tool call yet; then ``finish``."""
    tools = _REACT_TOOL.findall(system)
    if tools and "[[ ## tool_name_0 ## ]]" not in user:
        name, schemas = tools[0]
        arguments = {
            key: _example(schema, schema.get("$defs", {}), key)
            for key, schema in ast.literal_eval(schemas).items()
        }
        return dspy_reply(
            next_thought=f"I call {name}.", next_tool_name=name, next_tool_args=arguments
        )
    return dspy_reply(
        next_thought="I have what I need.", next_tool_name="finish", next_tool_args={}
    )


def _schema_of(system: str, field: str) -> dict[str, Any] | None:
    """The JSON schema on ``field``'s template line (``[[ ## field ## ]] … JSON schema: {…}``)."""
    header = system.find(f"[[ ## {field} ## ]]")
    if header < 0:
        return None
    line_end = system.find("[[ ##", header + 1)
    marker = system.find("JSON schema:", header, line_end if line_end > 0 else None)
    if marker < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(system[marker + len("JSON schema:") :].lstrip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1 (a random free port).

    Use it as a context manager (or call :meth:`start` / :meth:`stop`). ``base_url`` is what
    to pass as ``api_base`` or ``OPENAI_BASE_URL``; ``requests`` holds every request body.

    Args:
        responder: request body → assistant content; default :func:`schema_responder`.
        delay: seconds to wait before answering (an LLM stand-in).
        usage: token counts reported in each response.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        delay: float = 0.0,
        usage: tuple[int, int] = (42, 17),
        model: str = "fake-model",
    ) -> None:
        self.responder = responder or schema_responder
        self.delay = delay
        self.usage = usage
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeOpenAIServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits for the poll: 0.5 s by default
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
        if self.delay:
            time.sleep(self.delay)
        content = self.responder(body)
        prompt, completion = self.usage
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


_TOKEN = re.compile(r"\s*\S+|\s+")


def _sse_body(completion: dict[str, Any]) -> bytes:
    """``completion`` as OpenAI's server-sent events (``"stream": true``): one chunk per word
    of the content, a final chunk with the finish reason and usage, then ``[DONE]``."""
    choice = completion["choices"][0]
    head = {k: completion[k] for k in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"
    tokens = _TOKEN.findall(choice["message"]["content"]) or [""]
    chunks = [
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": t} if i == 0 else {"content": t},
                    "finish_reason": None,
                }
            ],
        }
        for i, t in enumerate(tokens)
    ]
    chunks.append(
        {
            **head,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
            "usage": completion["usage"],
        }
    )
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(events).encode()


def _handler_for(fake: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    """The request handler: ``"stream": true`` requests get SSE answers, and TCP_NODELAY is
    set so a keep-alive client does not wait for a delayed ACK (about 40 ms) between the
    header and the body writes of each answer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON"}})
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                completion = fake._complete(body)
            except Exception as exc:  # the responder failed: tell the client, like a real API
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
                return
            if body.get("stream"):
                self._send_bytes(200, _sse_body(completion), "text/event-stream")
            else:
                self._send(200, completion)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": fake.model}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            self._send_bytes(status, json.dumps(payload).encode(), "application/json")

        def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests and benchmarks stay quiet

    return Handler


def main(argv: list[str] | None = None) -> None:
    """``python -m flock.fake_llm --port 0 [--delay SECONDS]``: serve until terminated.

    Prints the base URL (``http://127.0.0.1:PORT/v1``) on stdout, then answers with
    :func:`schema_responder` in this process, so a benchmark's client does not share a GIL
    with it. Like :class:`FakeOpenAIServer`, it answers ``"stream": true`` requests with
    server-sent events, as OpenAI does (clients that stream by default, such as flock-core's
    DSPy engine, get nothing from a plain JSON answer). SIGTERM or Ctrl-C stops it.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m flock.fake_llm",
        description="A local OpenAI-compatible chat-completions server (schema_responder).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before each answer"
    )
    args = parser.parse_args(argv)

    fake = FakeOpenAIServer(delay=args.delay)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler_for(fake))
    server.daemon_threads = True
    fake._server = server  # so that base_url reports the bound port

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(fake.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
