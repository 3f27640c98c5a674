"""Evaluation reports: ``metrics.json``, a Markdown table and PNG plots.

Files written into the run folder by :func:`write_report`:

* ``metrics.json``: protocol, folds, checkpoint, recipe hash, package versions and, per
  system, the pooled metrics, each fold's metrics and their mean ± std;
* ``report.md``: the systems side by side (UA, WA, macro-F1, k-best, speakers with
  UAR >= 0.75 and >= 0.5, CCC of valence/arousal (and dominance) where a system predicts
  them; one table per test set under a protocol whose folds are test sets);
* ``plots/confusion_<system>.png`` (row-normalised: each row is a true class and sums to
  1), ``plots/speaker_uar.png`` (each speaker's UAR, systems side by side) and
  ``plots/va_<system>.png`` (prediction against target, one panel per dimension,
  coloured by ``va_source``).

Plots use matplotlib's Agg canvas directly, never pyplot, so nothing depends on a display
or on global figure state.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from reasoning.files import atomic_file
from reasoning.manifest import DIMENSIONS

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
TABLE_NAME = "report.md"
PLOTS_DIR = "plots"
# distribution name -> key in metrics.json
PACKAGES = {"torch": "torch", "transformers": "transformers", "peft": "peft",
            "emoreason": "emoreason", "scikit-learn": "sklearn", "opensmile": "opensmile",
            "numpy": "numpy", "jiwer": "jiwer", "openai-whisper": "whisper"}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when not installed)."""
    out = {}
    for dist, key in PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy values and paths."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """Replace NaN/inf by None everywhere, so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(data: Mapping, path: str | Path) -> Path:
    """Write strict JSON atomically (temporary file renamed over the target)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(json.loads(json.dumps(data, default=json_default))), indent=2,
                      allow_nan=False)
    with atomic_file(path) as f:
        f.write(text + "\n")
    return path


# ---------------------------------------------------------------------------- table

def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _dec(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _get(tree: Mapping, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _va_source(pooled: Mapping) -> str | None:
    va = pooled.get("va") or {}
    for source in ("annotated", "derived", "unspecified"):
        if source in va:
            return source
    return None


def _va_dimensions(systems: Mapping) -> list[str]:
    """The VA dimensions any system's pooled metrics score, in manifest order."""
    present = set()
    for sysres in systems.values():
        for dims in (sysres["pooled"].get("va") or {}).values():
            present.update(dims)
    return [d for d in DIMENSIONS if d in present]


def _system_rows(systems: Mapping, scores: Mapping[str, Mapping], folded: bool,
                 dims: Sequence[str], rationales: bool = False) -> list[str]:
    """One table line per system: classification columns from ``summary`` (mean ± std, when
    ``folded``) or from ``scores[name]``, speaker shares, CCC and (with ``rationales``) the
    verifier's pass rate and clip-specific grounding always from ``scores[name]``."""
    cols = [("ua", _pct), ("wa", _pct), ("macro_f1", _pct), ("k_best.top1", _pct),
            ("k_best.top2", _pct), ("k_best.top3", _pct)]
    lines = []
    for name, sysres in systems.items():
        metrics = scores[name]
        cells = [name]
        for key, fmt in cols:
            if folded:
                agg = sysres.get("summary", {}).get(key)
                cells.append(fmt(agg["mean"], agg["std"]) if agg else "–")
            else:
                cells.append(fmt(_get(metrics, key)))
        spk = _get(metrics, "speakers")
        for t in ("0.75", "0.5"):
            share = spk.get(f"share_uar_ge_{t}") if spk else None
            cells.append("–" if share is None else
                         f"{round(share * spk['speakers'])}/{spk['speakers']}")
        source = _va_source(metrics)
        for dim in dims:
            value = _get(metrics, f"va.{source}.{dim}.ccc") if source else None
            cells.append(_dec(value) + (f" ({source})" if value is not None else ""))
        if rationales:
            cells += [_pct(_get(metrics, "rationales.pass_rate")),
                      _dec(_get(metrics, "rationales.clip_specific_grounding"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_table(result: Mapping) -> str:
    """The systems side by side as a Markdown table (with a heading and notes).

    Classification columns are mean ± std over folds when there is more than one fold, else
    the single fold's value. The speaker share and CCC are computed on the pooled test
    predictions (every test utterance once), since one fold of leave-one-speaker-out holds
    a single speaker. A protocol whose folds are different test sets (``msp-podcast``:
    Development, Test1, Test2, ...) gets one table per fold instead, nothing pooled. There
    is a CCC column for each VA dimension a system predicts (valence, arousal, dominance).
    """
    systems: Mapping = result["systems"]
    n_folds = len(result.get("folds", [])) or 1
    folded = n_folds > 1
    dims = _va_dimensions(systems)
    header = ["system", "UA %", "WA %", "macro-F1 %", "top-1 %", "top-2 %", "top-3 %",
              "speakers UAR ≥ .75", "speakers UAR ≥ .5"] + [f"CCC {d}" for d in dims]
    rationales = any(s["pooled"].get("rationales") for s in systems.values())
    if rationales:  # clip-specific: pass rate on the clip's own evidence - on another clip's
        header += ["rationale pass %", "clip-specific grounding"]
    head = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    separate = result["protocol"].get("folds") == "test-sets"
    if separate:
        lines = []
        for fold in result.get("folds", []):
            scores = {name: sysres["per_fold"][fold["name"]] for name, sysres in systems.items()}
            lines += [f"### {fold['name']}: {fold['test']} test utterances", "", *head,
                      *_system_rows(systems, scores, False, dims, rationales), ""]
    else:
        lines = head + _system_rows(systems, {n: s["pooled"] for n, s in systems.items()},
                                    folded, dims, rationales)
    proto = result["protocol"]
    first = next(iter(systems.values()))["pooled"]
    notes = [
        f"## {proto['name']}: {proto.get('description', '')}",
        "",
        f"Manifest `{result.get('manifest')}`; {first['n']} test utterances, "
        f"{len(proto['labels'])} labels ({', '.join(proto['labels'])}); "
        f"{n_folds} fold{'s' if n_folds > 1 else ''}"
        + (f" ({', '.join(f['name'] for f in result['folds'])})" if folded else "") + ".",
        "",
        *lines,
        "",
        ("Each fold is a test set of its own, reported apart. " if separate else
         ("UA, WA, macro-F1 and top-k: mean ± sample std over folds. " if folded else "")
         + "Speaker share and CCC: pooled test predictions of all folds. ")
        + "UA = mean recall over the classes present; a class absent from a fold or speaker "
          "is left out.",
    ]
    for name, sysres in systems.items():
        choice = sysres.get("layer_choice")  # the encoder probe (reasoning.evaluation.baselines)
        if choice:
            notes += ["", f"{name}: layer of `{sysres.get('encoder')}` chosen on each fold's "
                      "training rows by inner cross-validation (its inner UA %): " + "; ".join(
                          f"{fold} layer {c['layer']} ({_pct(c['inner_ua'][c['layer']])})"
                          for fold, c in choice.items()) + "."]
    skipped = result.get("skipped") or {}
    if skipped:
        notes += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "."]
    prompts = result.get("prompt") or {}
    if prompts:
        def describe(p: Mapping) -> str:
            return (f"transcript {p.get('transcript')}, VA in prompt {p.get('va_in_prompt')}, "
                    f"cues {p.get('evidence', 'none')}, rationale order {p.get('rationale_order')}")

        notes += ["", "Prompts: " + "; ".join(
            f"{name}: " + (describe(v) if isinstance(v, Mapping) else " | ".join(map(describe, v)))
            for name, v in prompts.items()) + "."]
    return "\n".join(notes) + "\n"


# ---------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_reward_curves(history: Sequence[Mapping], path: str | Path, title: str = "GRPO") -> Path:
    """The GRPO log (:mod:`reasoning.training.grpo`, one record per step) as curves: the mean of each
    reward with its spread (± std over the step's completions) and the weighted total, above
    the KL to the starting policy and the mean completion length."""
    steps = [h["step"] for h in history]
    names = sorted({k.split("/")[1] for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    fig = _figure(7.0, 6.0)
    top, mid, low = fig.subplots(3, 1, sharex=True, height_ratios=[2, 1, 1])
    for name in names:
        mean = np.array([h[f"rewards/{name}/mean"] for h in history])
        std = np.array([h[f"rewards/{name}/std"] for h in history])
        (line,) = top.plot(steps, mean, label=name)
        top.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    top.plot(steps, [h["reward"] for h in history], color="black", linewidth=2, label="weighted total")
    top.set_ylabel("reward (mean ± std)")
    top.legend(fontsize=7, ncol=3)
    top.set_title(title, fontsize=10)
    mid.plot(steps, [h["kl"] for h in history], color="tab:red")
    mid.set_ylabel("KL to start")
    low.plot(steps, [h["completions/mean_length"] for h in history], color="tab:gray")
    low.set_ylabel("tokens")
    low.set_xlabel("step")
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str],
                   path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted). A class with
    no utterance has an empty, grey row marked n/a."""
    cm = np.asarray(confusion, dtype=float)
    support = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(support > 0, cm / support, np.nan)
    size = max(4.0, 0.6 * len(labels) + 2.0)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")
    im = ax.imshow(np.ma.masked_invalid(norm), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isnan(norm[i, j]):
                if j == 0:
                    ax.text(len(labels) / 2 - 0.5, i, "n/a (no utterance)", ha="center",
                            va="center", fontsize=8, color="0.3")
                continue
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [f"{c} ({int(s)})" for c, s in zip(labels, support[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (utterances)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_speaker_uar(per_system: Mapping[str, Mapping[str, float | None]], path: str | Path,
                     thresholds: Sequence[float] = (0.75, 0.5),
                     genders: Mapping[str, str | None] | None = None) -> Path:
    """Each speaker's UAR as bars, one bar per system, with the threshold lines."""
    speakers = sorted({s for uars in per_system.values() for s in uars})
    systems = list(per_system)
    width = 0.8 / max(1, len(systems))
    fig = _figure(max(5.0, 0.5 * len(speakers) * max(1, len(systems)) ** 0.5 + 2.5), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(speakers))
    for k, name in enumerate(systems):
        vals = [per_system[name].get(s) for s in speakers]
        ax.bar(x + (k - (len(systems) - 1) / 2) * width,
               [np.nan if v is None else v for v in vals], width, label=name)
    for t, style in zip(thresholds, ("--", ":", "-.")):
        ax.axhline(t, color="0.3", linestyle=style, linewidth=1, label=f"UAR = {t:g}")
    names = [f"{s} ({genders[s]})" if genders and genders.get(s) else s for s in speakers]
    ax.set_xticks(x, names, rotation=45 if len(speakers) > 8 else 0, ha="right"
                  if len(speakers) > 8 else "center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("UAR (mean recall over the speaker's classes)")
    ax.set_xlabel("speaker")
    ax.set_title("Per-speaker UAR")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def plot_va_scatter(points: Mapping[str, tuple[Sequence[float], Sequence[float],
                                               Sequence[str | None]]],
                    path: str | Path, title: str = "",
                    ccc: Mapping[str, Mapping[str, float | None]] | None = None) -> Path:
    """Prediction against target per VA dimension, coloured by ``va_source``.

    ``points``: ``{dim: (predictions, targets, sources)}``; ``ccc``: ``{dim: {source:
    value}}`` for the panel titles. The identity line is dashed; both axes span [-1, 1],
    the manifest's VA scale.
    """
    dims = [d for d, pts in points.items() if len(pts[0])]
    fig = _figure(4.0 * max(1, len(dims)), 4.4)
    for k, dim in enumerate(dims):
        pred, target, sources = (np.asarray(v, dtype=object) for v in points[dim])
        ax = fig.add_subplot(1, len(dims), k + 1)
        for source in sorted({str(s) for s in sources}):
            mask = np.array([str(s) == source for s in sources])
            ax.scatter(target[mask].astype(float), pred[mask].astype(float), s=10, alpha=0.6,
                       label=f"{source} (n={int(mask.sum())})")
        ax.plot([-1, 1], [-1, 1], color="0.4", linewidth=1, linestyle="--")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xlabel(f"target {dim}")
        ax.set_ylabel(f"predicted {dim}")
        cccs = [f"{s} {v:.3f}" for s, v in ((ccc or {}).get(dim) or {}).items() if v is not None]
        ax.set_title(dim + (f" (CCC {', '.join(cccs)})" if cccs else ""), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, bbox_inches="tight")
    return Path(path)


def _file_name(system: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in system)


def write_report(result: Mapping, out_dir: str | Path,
                 va_points: Mapping[str, Mapping[str, tuple[list, list, list]]] | None = None
                 ) -> dict[str, Any]:
    """Write ``metrics.json``, ``report.md`` and the plots into ``out_dir``.

    ``result`` is the evaluation result (see :func:`reasoning.evaluation.evaluate.evaluate_rows`):
    ``protocol``, ``folds``, ``systems`` ({name: {"pooled", "per_fold", "summary"}}), ...
    ``va_points`` gives, per system, ``{dim: (predictions, targets, sources)}`` for the
    VA scatter.
    Returns the paths written.
    """
    out = Path(out_dir)
    plots = out / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {"metrics": str(write_json(result, out / METRICS_NAME))}
    table = markdown_table(result)
    (out / TABLE_NAME).write_text(table, encoding="utf-8")
    paths["table"] = str(out / TABLE_NAME)
    written = []
    uars: dict[str, dict[str, float | None]] = {}
    genders: dict[str, str | None] = {}
    for name, sysres in result["systems"].items():
        pooled = sysres["pooled"]
        written.append(plot_confusion(
            pooled["confusion"], pooled["labels"], plots / f"confusion_{_file_name(name)}.png",
            f"{name}: UA {_pct(pooled['ua'])}%, WA {_pct(pooled['wa'])}% (n={pooled['n']})"))
        spk = pooled.get("speakers")
        if spk:
            uars[name] = {s: v["uar"] for s, v in spk["per_speaker"].items()}
            genders.update({s: v.get("gender") for s, v in spk["per_speaker"].items()})
        points = (va_points or {}).get(name)
        if points:
            va = pooled.get("va") or {}
            cccs = {d: {src: _get(dims, f"{d}.ccc") for src, dims in va.items()}
                    for d in points}
            written.append(plot_va_scatter(points, plots / f"va_{_file_name(name)}.png",
                                           f"{name}: VA prediction vs target", cccs))
    if uars:
        written.append(plot_speaker_uar(uars, plots / "speaker_uar.png", genders=genders))
    paths["plots"] = [str(p) for p in written]
    log.info("report written to %s (%d plots)", out, len(written))
    return paths
