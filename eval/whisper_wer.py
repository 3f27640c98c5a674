"""WER of a fetched Whisper model on a prepared manifest's transcripts (issue 12: how well
the speech encoder the recipes freeze hears the words of a corpus).

    python eval/whisper_wer.py --manifest data/prepared/emodb/manifest.jsonl \
        --model '$EMOREASON_MODELS/whisper-base' --language de

Greedy decoding of each clip with the model's own decoder, then corpus WER and CER after
Whisper's language-independent text normalizer (``reasoning.evaluation.metrics.asr_metrics``). Prints
one line of figures and a few of the worst utterances; ``--out`` also writes every
hypothesis as JSON Lines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.manifest import read_manifest
from reasoning.evaluation.metrics import asr_metrics
from reasoning.pretrained import resolve_model_path


def transcribe(model, processor, waves: list, language: str) -> list[str]:
    features = processor.feature_extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, language=language, task="transcribe")
    return [t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--model", required=True, help="a transformers Whisper folder, e.g. '$EMOREASON_MODELS/whisper-base'")
    parser.add_argument("--language", default="en", help="the corpus's language code (EmoDB: de)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="JSON Lines of id, reference and hypothesis")
    args = parser.parse_args(argv)

    path = resolve_model_path(args.model)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    processor = WhisperProcessor.from_pretrained(path)
    rows = [r for r in read_manifest(args.manifest) if (r.get("transcript") or "").strip()]
    start, hyps = time.perf_counter(), []
    for i in range(0, len(rows), args.batch_size):
        chunk = rows[i:i + args.batch_size]
        hyps += transcribe(model, processor, [load_audio(r["audio"], r.get("start"), r.get("end")) for r in chunk],
                           args.language)
    refs = [r["transcript"] for r in rows]
    m = asr_metrics(refs, hyps, normalizer="basic")
    print(f"{args.model} on {args.manifest} ({args.language}): {len(rows)} clips, WER {100 * m['wer']:.1f} %, "
          f"CER {100 * m['cer']:.1f} %, {time.perf_counter() - start:.0f} s")
    worst = sorted(zip(rows, hyps), key=lambda p: -asr_metrics([p[0]["transcript"]], [p[1]], "basic")["wer"])
    for row, hyp in worst[:3]:
        print(f"  {row['id']}: {row['transcript']!r} -> {hyp!r}")
    if args.out:
        args.out.write_text("".join(json.dumps({"id": r["id"], "reference": r["transcript"], "hypothesis": h},
                                               ensure_ascii=False) + "\n" for r, h in zip(rows, hyps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
