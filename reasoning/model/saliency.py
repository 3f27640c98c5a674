"""``emoreason select-layer``: which hidden layer of an SSL encoder carries the target.

Saliency-driven layer selection, after Mitra et al., arXiv 2503.22711 (a foundation-model
representation chosen by its saliency for the emotion targets). The encoder runs over a
seeded subset of training clips; each clip's output at every hidden layer is mean-pooled
over its real frames, giving ``x[i, l, d]`` (clip i, layer l, dimension d). Per layer,
the cross-correlation saliency score is

    S_l = (1 / D) * sum_d  rho(x[:, l, d], y)

the mean over dimensions of how strongly one dimension follows the target ``y``:

* valence or arousal (continuous): ``rho = |Pearson r(x_d, y)|``;
* emotion (categorical): ``rho = eta``, the correlation ratio
  ``sqrt(sum_c n_c (mean_c(x_d) - mean(x_d))^2 / sum_i (x_id - mean(x_d))^2)``, which is the
  multiple correlation between ``x_d`` and the one-hot label indicators (with two labels it
  is ``|r|`` against the one-hot column).

A dimension that does not vary scores 0. Scores lie in [0, 1]; the best layer is the
arg-max (the lowest index on ties). Layer 0 is the CNN feature projection, layer k the
output of transformer block k, as in ``model.paralinguistic.layer``.

``model.paralinguistic.layer: auto`` runs the same selection on the training manifest when a
run starts (:func:`resolve_auto_layer`), caches the result in the run folder and trains with
the best layer; the resolved recipe names that layer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from reasoning.training.config import LAYER_TARGETS, Recipe
from reasoning.tasks.collate import AudioCache
from reasoning.errors import RecipeError, UserError

log = logging.getLogger(__name__)

RESULT_NAME = "layer_saliency.json"
PLOT_NAME = "layer_saliency.png"
LAYER_KEY = "model.paralinguistic.layer"


def saliency_scores(features: np.ndarray, targets: list, target: str) -> np.ndarray:
    """Per-layer saliency (L,) of mean-pooled features (N, L, D) for ``targets`` (N labels
    for ``emotion``, N floats for ``valence``/``arousal``); see the module docstring."""
    x = np.asarray(features, dtype=np.float64)
    xc = x - x.mean(0, keepdims=True)
    total = (xc ** 2).sum(0)                                            # (L, D)
    if target == "emotion":
        labels = np.asarray([str(t) for t in targets])
        between = np.zeros_like(total)
        for label in np.unique(labels):
            group = xc[labels == label]
            between += len(group) * group.mean(0) ** 2
        rho = np.sqrt(np.divide(between, total, out=np.zeros_like(total), where=total > 1e-12))
    else:
        y = np.asarray(targets, dtype=np.float64)
        yc = y - y.mean()
        denom = np.sqrt(total * (yc ** 2).sum())
        cov = np.einsum("n,nld->ld", yc, xc)
        rho = np.abs(np.divide(cov, denom, out=np.zeros_like(total), where=denom > 1e-12))
    return np.clip(rho, 0, 1).mean(-1)


@torch.no_grad()
def layer_features(model: torch.nn.Module, waves: list[np.ndarray], batch_size: int = 8,
                   where: str = LAYER_KEY, progress: bool = True, normalize: bool = True) -> np.ndarray:
    """Mean-pooled hidden states (N, L, D) of ``model`` (a transformers speech SSL model,
    L = its layers + 1) over ``waves`` (mono float32 at 16 kHz); ``normalize``: z-normalise
    each waveform first (the model's ``do_normalize``, :func:`reasoning.model.encoders.wave_normalization`)."""
    from reasoning.model.encoders import SSLEncoder

    fix = ("give model.paralinguistic.layer an integer instead of `auto`" if where == LAYER_KEY
           else "use a WavLM, HuBERT or wav2vec2 model")
    if not hasattr(getattr(model, "config", None), "num_hidden_layers"):
        raise RecipeError(f"{where}: layer selection compares the encoder's hidden layers, but "
                          f"{type(model).__name__} has no config.num_hidden_layers: {fix}.")
    encoder = SSLEncoder(model, layer=0, normalize=normalize).eval()
    device = next(model.parameters()).device
    out = []
    for i in tqdm(range(0, len(waves), batch_size), desc="select-layer", disable=not progress):
        chunk = [torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in waves[i:i + batch_size]]
        padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True).to(device)
        lengths = torch.tensor([len(w) for w in chunk], device=device)
        hidden, frames = encoder.hidden_states(padded, lengths)
        if not hidden:
            raise RecipeError(f"{where}: layer selection compares the encoder's hidden layers, but "
                              f"{type(model).__name__} returns no hidden states (output_hidden_states=True "
                              f"gives none): {fix}.")
        h = torch.stack(hidden, 1).float()                              # (B, L, T, D)
        valid = torch.arange(h.shape[2], device=device)[None, :] < frames.clamp(min=1)[:, None]
        w = valid[:, None, :, None].float()
        out.append(((h * w).sum(2) / w.sum(2)).cpu().numpy())           # (B, L, D)
    return np.concatenate(out)


def target_rows(rows: list[dict], target: str, labels: list[str] | None = None) -> list[dict]:
    """The rows that have a value for ``target`` (an emotion in ``labels`` when given)."""
    if target == "emotion":
        return [r for r in rows if r.get("emotion") and (not labels or r["emotion"] in labels)]
    return [r for r in rows if r.get(target) is not None]


def select_layer(model: torch.nn.Module, rows: list[dict], target: str, max_clips: int = 200,
                 seed: int = 0, labels: list[str] | None = None, where: str = LAYER_KEY,
                 audio: AudioCache | None = None, normalize: bool = True) -> dict:
    """Score every hidden layer of ``model`` on a seeded subset of ``rows``.

    Returns ``{"target", "scores": [S_0 .. S_L], "best", "clips", "ids", "formula"}``.
    """
    if target not in LAYER_TARGETS:
        raise UserError(f"target {target!r} is not one of {', '.join(LAYER_TARGETS)}.")
    usable = target_rows(rows, target, labels)
    if len(usable) < 2:
        raise UserError(f"layer selection for {target}: {len(usable)} of {len(rows)} rows have a "
                        f"{target} value; at least 2 are needed.")
    if len(usable) > max_clips:
        pick = np.random.default_rng(seed).choice(len(usable), max_clips, replace=False)
        usable = [usable[i] for i in sorted(pick)]
    targets = [r["emotion"] if target == "emotion" else float(r[target]) for r in usable]
    if len(set(map(str, targets))) < 2:
        raise UserError(f"layer selection for {target}: every selected clip has the same value "
                        f"({targets[0]}); no layer can be told apart.")
    audio = audio or AudioCache(max_mb=0)
    feats = layer_features(model, [audio(r) for r in usable], where=where, normalize=normalize)
    scores = saliency_scores(feats, targets, target)
    return {"target": target, "scores": [round(float(s), 6) for s in scores],
            "best": int(np.argmax(scores)), "clips": len(usable), "ids": [r["id"] for r in usable],
            "formula": "mean over dimensions of |Pearson r| (valence, arousal) or the correlation "
                       "ratio eta (emotion) between the mean-pooled layer output and the target"}


def plot_scores(result: dict, path: str | Path, title: str = "") -> Path:
    """A bar chart of the per-layer scores, the best layer highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = result["scores"]
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(scores) + 2), 3))
    colors = ["tab:orange" if i == result["best"] else "tab:blue" for i in range(len(scores))]
    ax.bar(range(len(scores)), scores, color=colors)
    ax.set_xlabel("hidden layer (0 = CNN features)")
    ax.set_ylabel(f"saliency for {result['target']}")
    ax.set_xticks(range(len(scores)))
    ax.set_title(title or f"best layer {result['best']} ({result['clips']} clips)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _fingerprint(encoder: str, target: str, max_clips: int, seed: int, rows: list[dict]) -> str:
    ids = "\n".join(sorted(r["id"] for r in rows))
    return hashlib.sha256(f"{encoder}|{target}|{max_clips}|{seed}|{ids}".encode()).hexdigest()[:16]


def resolve_auto_layer(recipe: Recipe, rows: list[dict], out_dir: str | Path,
                       device: str | torch.device = "cpu") -> int:
    """``layer: auto``: pick the layer on the training ``rows`` (the encoder runs on
    ``device``), set it in ``recipe`` and return it. The result is cached in
    ``out_dir/layer_saliency.json`` (reused while the encoder, target, subset size, seed and
    rows are the same) with its plot beside it."""
    from transformers import AutoModel

    from reasoning.model.builders import _from_pretrained
    from reasoning.model.encoders import wave_normalization

    p = recipe.model.paralinguistic
    seed = recipe.train.seed
    out = Path(out_dir)
    key = _fingerprint(str(p.path), p.auto_target, p.auto_max_clips, seed, rows)
    cache = out / RESULT_NAME
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("fingerprint") == key:
            p.layer = int(cached["best"])
            log.info("layer: auto -> %d (cached in %s)", p.layer, cache)
            return p.layer
    model = _from_pretrained(AutoModel, p.path, "model.paralinguistic").eval().to(device)
    result = select_layer(model, rows, p.auto_target, p.auto_max_clips, seed, recipe.data.labels,
                          normalize=wave_normalization(p.path))
    del model  # the training model loads its own copy
    result.update(fingerprint=key, encoder=str(p.path))
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    plot_scores(result, out / PLOT_NAME)
    p.layer = result["best"]
    log.info("layer: auto -> %d for %s (scores %s; %s)", p.layer, p.auto_target,
             " ".join(f"{s:.3f}" for s in result["scores"]), cache)
    return p.layer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", required=True, help="SSL encoder: hub id or local folder (WavLM, HuBERT, wav2vec2)")
    parser.add_argument("--manifest", required=True, help="manifest.jsonl of training clips")
    parser.add_argument("--target", required=True, choices=LAYER_TARGETS, help="what the layer should carry")
    parser.add_argument("--split", action="append", default=[],
                        help="use rows of this split only (repeatable; default: every row)")
    parser.add_argument("--max-clips", type=int, default=200, help="clips in the seeded subset (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset")
    parser.add_argument("--out", default=".", help=f"folder for {RESULT_NAME} and {PLOT_NAME} (default: here)")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModel

    from reasoning.model.builders import disk_only
    from reasoning.model.encoders import wave_normalization
    from reasoning.manifest import read_manifest

    rows = [r for r in read_manifest(args.manifest) if not args.split or r.get("split") in args.split]
    if not rows:
        raise UserError(f"{args.manifest}: no rows in split(s) {args.split}.")
    try:
        with disk_only(args.encoder):
            model = AutoModel.from_pretrained(args.encoder).eval()
    except OSError as err:
        raise UserError(f"--encoder {args.encoder}: could not load it ({str(err).strip().splitlines()[0]}). "
                        "Give a local folder with config.json and the weights; offline, download a hub id "
                        "elsewhere first (`hf download ID --local-dir DIR`).") from err
    result = select_layer(model, rows, args.target, args.max_clips, args.seed, where="--encoder",
                          normalize=wave_normalization(args.encoder))
    result["encoder"] = args.encoder
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_NAME).write_text(json.dumps(result, indent=1))
    plot = plot_scores(result, out / PLOT_NAME, f"{args.encoder}: {args.target}")
    top = max(result["scores"]) or 1.0
    print(f"saliency for {args.target} over {result['clips']} clips ({result['formula']}):")
    for i, s in enumerate(result["scores"]):
        mark = "  <- best" if i == result["best"] else ""
        print(f"  layer {i:2d}  {s:.4f}  {'#' * round(30 * s / top)}{mark}")
    print(f"best layer: {result['best']}  (set model.paralinguistic.layer: {result['best']}, or use `auto`)")
    print(f"wrote {out / RESULT_NAME} and {plot}")
    return 0
