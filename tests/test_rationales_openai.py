"""The OpenAI-compatible writer against a real HTTP server on 127.0.0.1 (no network)."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reasoning.cli import main
from reasoning.evidence import Z_FEATURES
from reasoning.rationales import RationaleRequest, WriterError, write_rationales
from reasoning.rationales.openai_chat import OpenAIWriter

KEY = "sk-test-secret-123"
GOOD = "anger: a loud voice and lowered pitch."


def evidence():
    z = dict.fromkeys(Z_FEATURES)
    z.update(f0_mean_st=-1.0, loudness=1.2)
    return {"z": z, "values": {}, "flags": [], "error": None, "lexical": None}


class Server:
    """Speaks POST /v1/chat/completions. ``script`` says how to answer each request in
    turn (the last entry repeats): ok, 500, 503-retry-after, 401, timeout, malformed,
    no-choices, empty, and echo-500, echo-malformed, echo-ok, which send the request
    headers back (as a careless proxy or a debugging server does)."""

    def __init__(self):
        self.script, self.requests, self.inflight, self.max_inflight = ["ok"], [], 0, 0
        self.delay, self.answer, self.lock = 0.0, GOOD, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, payload, headers=()):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, "body": body,
                                            "auth": self.headers.get("Authorization")})
                    action = server.script[min(n, len(server.script) - 1)]
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    time.sleep(server.delay)
                    if self.path != "/v1/chat/completions":
                        return self._send(404, {"error": {"message": "not found"}})
                    if action == "timeout":
                        time.sleep(1.0)
                        return self._send(200, {"choices": []})
                    if action == "500":
                        return self._send(500, {"error": {"message": "boom"}})
                    if action == "503-retry-after":
                        return self._send(503, {"error": {"message": "busy"}}, [("Retry-After", "0")])
                    if action == "401":
                        return self._send(401, {"error": {"message": "invalid api key"}})
                    echo = "".join(f"{k}: {v}\n" for k, v in sorted(self.headers.items()))
                    if action == "echo-500":
                        return self._send(500, f"bad request; you sent:\n{echo}".encode(),
                                          [("Retry-After", "0")])
                    if action == "echo-malformed":
                        return self._send(200, f"<html>{echo}</html>".encode())
                    if action == "malformed":
                        return self._send(200, b"{not json")
                    if action == "no-choices":
                        return self._send(200, {"id": "x", "object": "chat.completion"})
                    content = "" if action == "empty" else server.answer
                    if action == "echo-ok":
                        content += " " + echo
                    self._send(200, {
                        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}})
                finally:
                    with server.lock:
                        server.inflight -= 1

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the client hung up on a "timeout" answer on purpose

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def make(server, tmp_path, **kw):
    opts = dict(base_url=server.url, model="teacher-1", api_key_env="EMOREASON_TEST_KEY",
                cache_dir=tmp_path / "cache", timeout=2.0, retries=2, backoff=0.01)
    opts.update(kw)
    return OpenAIWriter(**opts)


def request(i=0):
    return RationaleRequest(f"u{i}", "anger", "Get out of here.", evidence())


def test_speaks_the_chat_completions_protocol_and_hides_the_key(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EMOREASON_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    w = make(server, tmp_path)
    assert w.write(request(), 0, []) == GOOD
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == f"Bearer {KEY}"
    assert sent["body"]["model"] == "teacher-1" and sent["body"]["temperature"] == 0.0
    assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]
    assert "Emotion: anger" in sent["body"]["messages"][1]["content"]
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1
    assert KEY not in cached[0].read_text() and KEY not in caplog.text
    assert w.write(request(), 0, []) == GOOD and len(server.requests) == 1  # from the cache
    w.write(request(), 1, ["'x': wrong"])
    assert server.requests[1]["body"]["temperature"] == 0.7  # a retry samples


@pytest.mark.parametrize("script", [["500", "ok"], ["malformed", "no-choices", "ok"],
                                    ["timeout", "ok"], ["503-retry-after", "empty", "ok"]])
def test_transient_failures_are_retried(server, tmp_path, script):
    server.script = script
    w = make(server, tmp_path, timeout=0.3)
    assert w.write(request(), 0, []) == GOOD
    assert len(server.requests) == len(script) and w.stats["retries"] == len(script) - 1


def test_persistent_failure_is_reported_and_a_refusal_is_not_retried(server, tmp_path):
    server.script = ["500"]
    with pytest.raises(WriterError, match=r"HTTP 500 .*gave up after 3 tries"):
        make(server, tmp_path).write(request(), 0, [])
    assert len(server.requests) == 3
    server.script, server.requests = ["401"], []
    with pytest.raises(WriterError, match="HTTP 401.*not retried"):
        make(server, tmp_path).write(request(), 0, [])
    assert len(server.requests) == 1
    with pytest.raises(WriterError, match="HTTP 404"):
        make(server, tmp_path, base_url=server.url.replace("/v1", "/v2")).write(request(), 0, [])


def test_unreachable_endpoint_is_reported(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    w = OpenAIWriter(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(WriterError, match="no answer from"):
        w.write(request(), 0, [])


def rows(n):
    return [{"id": f"u{i}", "audio": "x.wav", "emotion": "anger", "transcript": "Get out.",
             "evidence": evidence()} for i in range(n)]


def test_run_goes_on_past_a_dead_endpoint_and_resumes_from_the_cache(server, tmp_path):
    # Answers vary by utterance so that the cache keys differ: the answer echoes nothing,
    # but the prompt (and so the key) holds the utterance id.
    server.script = ["ok", "ok", "500"]
    out, s = write_rationales(rows(3), make(server, tmp_path, retries=1, concurrency=1))
    assert [r["rationale"]["writer"] for r in out] == ["openai", "openai", "template"]
    assert out[2]["rationale"]["fallback"] and "HTTP 500" in out[2]["rationale"]["errors"][0]
    assert s["per_writer"]["openai"] == {"candidates": 2, "passed": 2, "errors": 3,
                                         "pass_rate": 1.0}
    assert s["final_pass"] == 3 and s["errors"][0]["id"] == "u2"
    # Resume (the endpoint is back): only the missing answer is paid for.
    server.script, server.requests = ["ok"], []
    out, s = write_rationales(out, make(server, tmp_path))
    assert s["kept"] == 2 and s["written"] == 1 and len(server.requests) == 1
    assert out[2]["rationale"]["writer"] == "openai"
    # Forced rewrite with a fresh writer: every answer comes from the disk cache.
    server.requests = []
    w = make(server, tmp_path)
    out, s = write_rationales(out, w, force=True)
    assert server.requests == [] and w.stats["cache_hits"] == 3 and s["final_pass"] == 3


def test_concurrency_is_bounded(server, tmp_path):
    server.delay = 0.05
    w = make(server, tmp_path, concurrency=2, cache_dir=None)
    out, s = write_rationales(rows(6), w)
    assert s["final_pass"] == 6 and len(server.requests) == 6
    assert 1 <= server.max_inflight <= 2


def test_false_claims_from_the_teacher_are_regenerated_then_replaced(server, tmp_path):
    server.answer = "anger: raised pitch, and she sounds sad."
    out, s = write_rationales(rows(1), make(server, tmp_path), max_attempts=2)
    r = out[0]["rationale"]
    assert r["writer"] == "template" and r["fallback"] and r["attempts"] == 2
    feedback = server.requests[1]["body"]["messages"][1]["content"]
    assert "rejected" in feedback and "raised pitch" in feedback
    assert s["per_writer"]["openai"]["pass_rate"] == 0.0


def test_cli_openai(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMOREASON_TEST_KEY", KEY)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(2)))
    assert main(["rationales", "--manifest", str(path), "--writer", "openai", "--base-url",
                 server.url, "--model", "teacher-1", "--api-key-env", "EMOREASON_TEST_KEY",
                 "--retries", "0"]) == 0
    out = capsys.readouterr().out
    assert "pass rate openai: 2/2 candidates (100.0%)" in out and KEY not in out
    assert (tmp_path / ".rationale_cache" / "openai").is_dir()
    assert main(["rationales", "--manifest", str(path), "--writer", "openai", "--base-url",
                 "localhost:1", "--model", "m"]) == 2


@pytest.mark.parametrize("content", ['{"text": 42}', '["a list"]', '{"text": ""}', "{cut sh"])
def test_an_unreadable_cache_file_is_refetched(server, tmp_path, caplog, content):
    w = make(server, tmp_path)
    assert w.write(request(), 0, []) == GOOD
    (cached,) = (tmp_path / "cache").glob("*.json")
    cached.write_text(content)
    assert w.write(request(), 0, []) == GOOD and len(server.requests) == 2
    assert "unreadable cache file" in caplog.text
    assert json.loads(cached.read_text())["text"] == GOOD  # the refetched answer replaced it


def run_cli(server, path, *flags):
    return main(["rationales", "--manifest", str(path), "--writer", "openai", "--base-url",
                 server.url, "--model", "teacher-1", "--api-key-env", "EMOREASON_TEST_KEY",
                 "--concurrency", "1", *flags])


def test_the_key_never_leaves_in_what_the_server_echoes(server, tmp_path, monkeypatch, capsys,
                                                        caplog):
    monkeypatch.setenv("EMOREASON_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    # Two rows get only echoed errors (3 attempts x 2 tries each), the third an answer that
    # echoes the headers in its text.
    server.script = ["echo-500", "echo-malformed"] * 6 + ["echo-ok"]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(3)))
    run_cli(server, path, "--retries", "1")
    out, err = capsys.readouterr()
    assert server.requests[0]["auth"] == f"Bearer {KEY}"  # it was sent, and echoed
    assert "HTTP 500" in caplog.text and "malformed answer" in out + path.read_text()
    stored = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    for where, text in [("stdout", out), ("stderr", err), ("log", caplog.text)] + [
            ("file", t) for t in stored]:
        assert KEY not in text, where
    assert "Bearer [redacted]" in path.read_text()


def test_the_summary_credits_each_rationale_to_the_writer_that_wrote_it(server, tmp_path, capsys):
    server.script = ["ok", "500"]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(2)))
    assert run_cli(server, path, "--retries", "0") == 0  # some requests worked: a usable run
    out = capsys.readouterr().out
    assert "2 written (openai 1, template 1 as fallback)" in out
    assert "fallbacks after failed requests: 1; run again to retry those rows" in out
    assert [json.loads(x)["rationale"]["writer"] for x in path.read_text().splitlines()] \
        == ["openai", "template"]


def test_a_run_whose_every_request_failed_exits_non_zero_and_keeps_the_manifest(server, tmp_path,
                                                                              capsys):
    server.script = ["500"]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(2)))
    before = path.read_text()
    assert run_cli(server, path, "--retries", "0") == 1
    err = capsys.readouterr().err
    assert "every request of the openai writer failed" in err and str(path) in err
    assert path.read_text() == before  # no template stand-ins written over it
