#!/usr/bin/env bash
# benchmarks/gpu_check.sh [--cpu] [--tiny] [--steps N] [--json FILE]
#
# The first GPU run, short (at most 10 minutes on one GPU): a few training steps of
# recipes/small_lora.yaml (bf16) and recipes/large_qlora.yaml (QLoRA + checkpointing) and
# `explain`, all with random weights built from data/configs/, and one table of each
# stage's peak memory next to what `emoreason estimate-memory` predicts. No hub, no weights
# on disk. It uses this checkout through PYTHONPATH (no install needed) and the Python of
# $PYTHON (default python3), and first says what that Python lacks. See
# benchmarks/gpu_check.py for the details; --cpu --tiny runs the same steps on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 600 "$PY" benchmarks/gpu_check.py "$@"
