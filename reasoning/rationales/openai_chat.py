"""Writer ``openai``: any OpenAI-compatible chat-completions endpoint, standard library only.

* ``base_url`` is the API root (``https://api.openai.com/v1``, ``http://localhost:8000/v1``
  for vLLM or llama.cpp servers); requests go to ``{base_url}/chat/completions``.
* The API key is read from the environment variable named by ``api_key_env`` and sent as
  ``Authorization: Bearer``; it is never logged, cached or put in an error message. A proxy
  or a debugging server may echo the request headers back, so every text that comes from
  the server (error bodies, malformed answers, network errors, the answer itself) has the
  key and any ``Bearer`` token redacted before it is logged, raised or stored. With the
  variable unset no header is sent (local servers need none).
* Retries: a timeout, a network error, HTTP 408/409/425/429/5xx or a malformed answer
  (not JSON, no ``choices[0].message.content``, empty text) is retried up to ``retries``
  times, waiting ``backoff * 2**k`` seconds (``Retry-After`` when the server sends it, at
  most 60 s). Other 4xx answers (bad key, unknown model, bad request) are reported at once:
  repeating the same request cannot change them. What still fails raises
  :class:`WriterError`, and the caller moves on to the next utterance.
* Cache: every successful answer is stored under ``cache_dir`` as one JSON file named by
  the SHA-256 of the request (URL, model, messages, temperature, max_tokens; not the key).
  A run that was interrupted asks the endpoint only for what it has not answered yet.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from reasoning.errors import UserError
from reasoning.files import atomic_file
from reasoning.rationales.base import RationaleRequest, WriterError, build_messages

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class OpenAIWriter:
    """Rationales from an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 cache_dir: str | Path | None = None, concurrency: int = 4,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                 temperature: float = 0.7, max_tokens: int = 120) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"--base-url {base_url!r}: give the API root with its scheme, "
                            "e.g. http://localhost:8000/v1")
        if not model:
            raise UserError("--model is required for --writer openai (the model name the "
                            "endpoint serves).")
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise UserError("--concurrency must be >= 1, --retries >= 0 and --timeout > 0.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.retries, self.backoff = model, timeout, retries, backoff
        self.temperature, self.max_tokens, self.concurrency = temperature, max_tokens, concurrency
        self._key = os.environ.get(api_key_env) or None
        if self._key is None:
            log.warning("openai writer: $%s is not set; sending requests without an API key",
                        api_key_env)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    # -- cache ---------------------------------------------------------------------------
    def _cache_path(self, body: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps({"url": self.url, **body}, sort_keys=True,
                                        ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / f"{key}.json"

    def _cache_get(self, path: Path | None) -> str | None:
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            entry = None
        text = entry.get("text") if isinstance(entry, dict) else None
        if isinstance(text, str) and text.strip():  # what _post would have accepted
            return text
        log.warning("openai writer: ignoring unreadable cache file %s; asking the endpoint "
                    "again", path)
        return None

    def _cache_put(self, path: Path | None, body: dict, text: str) -> None:
        if path is None:
            return
        with atomic_file(path) as f:  # a killed run never leaves half a file
            json.dump({"request": body, "text": text}, f, ensure_ascii=False)

    # -- HTTP ----------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        """Server text without the key; the ``Bearer`` pattern also catches a key that the
        server itself cut short."""
        if self._key:
            text = text.replace(self._key, "[redacted]")
        return _BEARER.sub(r"\1[redacted]", text)

    def _post(self, body: dict) -> str:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with self._lock:
            self.stats["requests"] += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            try:
                detail = self._redact(err.read().decode(errors="replace")).strip()[:200]
            except (OSError, AttributeError):
                detail = ""
            msg = f"HTTP {err.code} from {self.url}" + (f": {detail}" if detail else "")
            if err.code in RETRY_STATUS:
                wait = err.headers.get("Retry-After") if err.headers else None
                try:
                    wait = min(float(wait), MAX_RETRY_AFTER_S) if wait else None
                except ValueError:
                    wait = None
                raise _Retryable(msg, wait) from err
            raise WriterError(msg + " (not retried: the request itself was refused; check "
                              "the model name and the API key)") from err
        except (OSError, http.client.HTTPException) as err:
            # URLError, timeouts, resets, TLS errors and answers cut short mid-body.
            reason = self._redact(str(getattr(err, "reason", err)))  # may quote the server
            raise _Retryable(f"no answer from {self.url} ({reason or 'timed out'})") from err
        try:
            answer = json.loads(raw)
            text = answer["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as err:
            shown = self._redact(raw.decode(errors="replace"))[:120]
            raise _Retryable(f"malformed answer from {self.url}: {shown!r}") from err
        if not isinstance(text, str) or not text.strip():
            raise _Retryable(f"empty answer from {self.url}")
        return self._redact(text)

    def _post_with_retries(self, body: dict) -> str:
        for k in range(self.retries + 1):
            try:
                return self._post(body)
            except _Retryable as err:
                if k == self.retries:
                    raise WriterError(f"{err} (gave up after {k + 1} tries)") from err
                wait = err.wait if err.wait is not None else self.backoff * 2 ** k
                log.info("openai writer: %s; retrying in %.1f s", err, wait)
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(wait)
        raise AssertionError("unreachable")

    def write(self, request: RationaleRequest, attempt: int, feedback: Sequence[str] = ()) -> str:
        """One answer: from the cache when this exact request was answered before."""
        body = {"model": self.model, "messages": build_messages(request, feedback),
                "temperature": 0.0 if attempt == 0 else self.temperature,
                "max_tokens": self.max_tokens}
        path = self._cache_path(body)
        cached = self._cache_get(path)
        if cached is not None:
            with self._lock:
                self.stats["cache_hits"] += 1
            return cached
        text = self._post_with_retries(body)
        self._cache_put(path, body, text)
        return text
