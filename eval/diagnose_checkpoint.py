"""Where does a trained checkpoint lose the emotion? Linear probes on what it computes, and
which inputs its label scores depend on (issue 12: the model against the probe of its own
encoder).

    python eval/diagnose_checkpoint.py --checkpoint runs/emodb_real_cpu/speaker-03 \
        --manifest data/prepared/emodb/manifest.jsonl --test-speaker 03

For every clip of the manifest, one pass of the emotion prompt gives the label scores, each
projector's output (mean over its audio tokens) and the LLM's last hidden state at the
answer position. Rows of the other speakers train a class-balanced logistic regression on
each of those (the probe baseline's classifier); the test speaker's rows score it. Then the
label scores are computed again with one input taken from another clip of the same batch
(each audio stream, and the cue line of ``prompt.evidence``): the UA that is left says how
much the model reads that input. Prints one table (UA %).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reasoning.evaluation.baselines import _logistic
from reasoning.tasks.collate import to_device
from reasoning.explain import Explainer
from reasoning.manifest import read_manifest
from reasoning.evaluation.metrics import unweighted_recall


def passes(ex: Explainer, rows: list[dict], swap: str | None = None, batch_size: int = 16) -> dict:
    """Label scores and probed states of ``rows``; ``swap`` (a projector name, or ``cues``)
    gives each clip that input of the next clip in its batch."""
    m, states, hooks = ex.model, {}, []
    for name, projector in m.projectors.items():
        def keep(module, inputs, out, name=name):
            if swap == name:
                out = out.roll(1, 0)
            states.setdefault(name, []).append(out.mean(1))
            return out
        hooks.append(projector.register_forward_hook(keep))
    scores, last = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                batch = rows[s:s + batch_size]
                # the prompts of training (gold transcript and VA, where the recipe puts them there)
                ctx = [ex.collate.context(r, "emotion") for r in batch]
                if swap == "cues":
                    ctx = [{**c, "cues": other["cues"]} for c, other in zip(ctx, ctx[-1:] + ctx[:-1])]
                e_in = to_device(ex.collate(batch, "emotion", contexts=ctx), ex.device)
                emb = m.embed_prompt(e_in)  # runs each projector once
                out = m._run(emb, e_in["attention_mask"], output_hidden_states=True, logits_to_keep=1)
                last.append(out.hidden_states[-1][:, -1])
                scores.append(m.score_labels(e_in, emb))
    finally:
        for h in hooks:
            h.remove()
    pred = np.array(ex.labels)[torch.cat(scores).argmax(1).cpu().numpy()]
    feats = {f"{name} projector": torch.cat(v).float().cpu().numpy() for name, v in states.items()}
    feats["LLM last state"] = torch.cat(last).float().cpu().numpy()
    return {"pred": pred, "feats": feats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint or run folder")
    parser.add_argument("--manifest", type=Path, required=True, help="the manifest the run was trained on")
    parser.add_argument("--test-speaker", required=True, help="the held-out speaker of the run's fold")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    start = time.time()
    ex = Explainer(args.checkpoint, device=args.device)
    rows = [r for r in read_manifest(args.manifest) if r.get("emotion") in ex.labels]
    y = np.array([r["emotion"] for r in rows])
    test = np.array([str(r.get("speaker")) == args.test_speaker for r in rows])
    if not test.any() or test.all():
        parser.error(f"--test-speaker {args.test_speaker}: {test.sum()} of {len(rows)} rows; give the held-out "
                     "speaker of the run's fold")

    def ua(true, pred) -> float:
        return 100 * unweighted_recall(list(true), list(pred), ex.labels)

    plain = passes(ex, rows)
    print(f"| what | UA % (speaker {args.test_speaker}) |\n|---|---|")
    pred = plain["pred"]
    print(f"| label scores | {ua(y[test], pred[test]):.1f} (training speakers {ua(y[~test], pred[~test]):.1f}) |")
    for name, x in plain["feats"].items():
        clf = make_pipeline(StandardScaler(), _logistic()).fit(x[~test], y[~test])
        print(f"| logistic regression on the {name} | {ua(y[test], clf.predict(x[test])):.1f} |")
    swaps = [*ex.model.projectors] + (["cues"] if ex.prompt.evidence != "none" else [])
    test_rows = [r for r, t in zip(rows, test) if t]
    for swap in swaps:
        what = "the cue line" if swap == "cues" else f"the {swap} tokens"
        print(f"| label scores, {what} of another clip | {ua(y[test], passes(ex, test_rows, swap)['pred']):.1f} |")
    print(f"\n{len(rows)} clips, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
