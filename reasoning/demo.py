"""``emoreason demo --checkpoint RUN [--port P] [--share]``: a web page that explains clips.

One clip (uploaded, recorded in the browser, or a bundled example) gives:

* every label's probability as a bar chart (scored under the model, as ``emoreason explain``);
* valence and arousal as a point on the valence-arousal plane, with the quadrants named;
* the evidence measured in the clip (:mod:`reasoning.evidence`) as a table: cue, value,
  baseline (mean ± sd) and z;
* the generated rationale, and each of its claims with the verifier's verdict and reason
  (:func:`reasoning.rationales.verify.verify`);
* the model's own transcript, when the model transcribes (``prompt.transcript: asr``).

Several clips at once give one table, a row per clip. A clip that cannot be used (not audio,
empty, longer than ``--max-seconds``) is reported in the page, and the app goes on serving.

Predictions go through :class:`reasoning.explain.Explainer`, as in ``emoreason explain``.

Baseline of an uploaded clip: it has no speaker whose other utterances it could be compared
with, so its z-scores are against a corpus (:func:`reasoning.evidence.zscores_against`): the
rows the model was trained on (an export's ``baseline.jsonl``, or the training manifest's
training split, when it holds measured evidence), or ``--baseline MANIFEST``. The page says
which. The stated emotion of a rationale is checked against the model's own top label, since
an upload has no gold label.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import threading
from collections import Counter
from pathlib import Path

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.training.checkpoint import add_device_argument, resolve_device
from reasoning.errors import AudioError, UserError
from reasoning.evidence import Z_FEATURE_UNITS, Z_FEATURES, measure_alone
from reasoning.explain import Explainer, label_first
from reasoning.manifest import read_manifest
from reasoning.rationales.cues import CUES
from reasoning.rationales.verify import verify

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_SECONDS = 60.0
# The bundled examples: one clip per emotion of the voice the quickstart holds out.
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "samples" / "wav"
EXAMPLE_CLIPS = ("spk4_neutral_0.wav", "spk4_happy_0.wav", "spk4_angry_0.wav", "spk4_sad_0.wav")
# Russell's circumplex: (valence >= 0, arousal >= 0) -> the quadrant's name.
QUADRANTS = {(True, True): "excited, happy", (False, True): "tense, angry, afraid",
             (False, False): "sad, bored, tired", (True, False): "calm, relaxed, content"}
EVIDENCE_HEADERS = ["cue", "value", "baseline (mean ± sd)", "z"]
CLAIM_HEADERS = ["claim", "kind", "verdict", "reason"]
CLIPS_HEADERS = ["clip", "seconds", "emotion", "probability", "valence", "arousal", "quadrant",
                 "verifier", "rationale", "transcript", "error"]
CLIPS_WIDTHS = ["12%", "6%", "8%", "8%", "7%", "7%", "11%", "10%", "13%", "8%", "10%"]
MODEL_LABEL = "the model's top label"  # what the stated emotion is checked against
# How the evidence table names a feature: the cue a rationale cites it by.
FEATURE_NAMES = {c.features[0]: c.label for c in CUES if len(c.features) == 1} | {
    "word_rate": "speaking rate (words per second)"}


def quadrant(valence: float, arousal: float) -> str:
    return QUADRANTS[(valence >= 0, arousal >= 0)]


def check_port(host: str, port: int) -> None:
    """Refuse a port that something already listens on, before the model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            s.bind((host, port))
        except OSError as err:
            raise UserError(f"port {port} on {host} is in use ({err.strerror}): pass --port with a free "
                            f"port, e.g. --port {port + 1}, or stop the program that listens on {port}.") from err


class DemoModel:
    """A loaded checkpoint (or export) and the corpus that uploaded clips are z-scored against."""

    def __init__(self, checkpoint: str | Path, baseline: str | Path | None = None,
                 max_seconds: float = MAX_SECONDS, max_new_tokens: int = 48, device: str | None = None):
        from reasoning.export import baseline_rows, training_evidence

        self.explainer = Explainer(checkpoint, batch_size=8, max_new_tokens=max_new_tokens, device=device)
        self.labels = self.explainer.labels
        self.explainer.top_k = len(self.labels)
        self.max_seconds = max_seconds
        if baseline is not None:
            self.reference, self.reference_source = baseline_rows(read_manifest(baseline)), str(baseline)
            if not self.reference:
                raise UserError(f"--baseline {baseline}: no row has measured evidence; run "
                                f"`emoreason evidence --manifest {baseline}` first.")
        else:
            self.reference, self.reference_source = training_evidence(self.explainer.checkpoint,
                                                                      self.explainer.recipe)
        datasets = Counter(r.get("dataset") for r in self.reference)
        self.dataset = datasets.most_common(1)[0][0] if datasets else None
        self.asr = self.explainer.prompt.transcript == "asr"
        self._lock = threading.Lock()  # one prediction at a time: the two tabs share the model

    def check_clip(self, path: str | Path) -> str | None:
        """Why ``path`` cannot be explained (not audio, empty, too long), or None."""
        try:
            wave = load_audio(path)
        except AudioError as err:  # its message names the upload's temporary path, and a manifest
            name = Path(path).name
            reason = str(err).replace(str(path), name).removeprefix(f"{name}: ").split(". ")[0]
            return (f"{name}: not usable as audio: {reason}. Upload a clip with sound in it, in a format that "
                    "soundfile or ffmpeg reads (WAV, FLAC, OGG, MP3, M4A).")
        seconds = len(wave) / SAMPLE_RATE
        if seconds > self.max_seconds:
            return (f"{Path(path).name}: {seconds:.1f} s long; this demo takes clips up to {self.max_seconds:g} s "
                    "(start it with a larger --max-seconds, or cut the clip).")
        return None

    def baseline_note(self, evidence: dict | None) -> str:
        """Which baseline the z-scores of a clip are against, in words."""
        if evidence is None or evidence.get("error"):
            return "No evidence: the clip could not be measured."
        if not self.reference:
            return (f"No baseline: {self.reference_source}. With nothing to compare the clip with, its z-scores "
                    "are empty and no cue claim can be supported; start the demo with --baseline MANIFEST, a "
                    "manifest measured by `emoreason evidence`.")
        silent = "silent" in evidence.get("flags", [])  # a silent clip is left out of every baseline
        n = evidence["baseline"]["n"] - (0 if silent else 1)
        return (f"Baseline: the corpus `{self.dataset}`, {n} measured clips the model was trained on "
                f"(from `{self.reference_source}`){'' if silent else ', and this clip'}. An uploaded clip has no "
                "speaker baseline, so z compares it with the corpus mean, not with the speaker's own voice.")

    def analyse(self, paths: list[str], transcript: str | None = None) -> list[dict]:
        """Predict, measure and verify each clip: one dict per path, in order, with ``clip``,
        ``path`` and either ``error`` or ``prediction`` (:meth:`Explainer.predict`),
        ``evidence``, ``stats`` (the baseline's mean and sd per feature) and ``verdict``."""
        transcript = (transcript or "").strip() or None
        results = [{"clip": Path(p).name, "path": str(p), "error": self.check_clip(p)} for p in paths]
        todo = [r for r in results if r["error"] is None]
        # Measured before the prediction: a model trained with prompt.evidence reads the cues.
        measured = [measure_alone({"id": Path(r["path"]).stem, "audio": r["path"], "transcript": transcript},
                                  self.reference) for r in todo]
        try:
            with self._lock:
                preds = self.explainer.predict([m[0] for m in measured], progress=False) if todo else []
        except UserError as err:  # e.g. a model that needs a transcript with every clip
            for r in todo:
                r["error"] = str(err)
            return results
        for r, (row, stats), pred in zip(todo, measured, preds):
            said = pred.get("transcript") if self.asr else transcript
            if said != transcript:  # an ASR model's own words: the lexical evidence comes from them
                row, stats = measure_alone({**row, "transcript": said}, self.reference)
            ev = row["evidence"]
            verdict = None
            if pred["rationale"] and not ev.get("error"):
                verdict = verify(label_first(pred["rationale"], self.labels), ev, pred["emotion"], said,
                                 gold_name=MODEL_LABEL)
            r.update(prediction=pred, evidence=ev, stats=stats, verdict=verdict, transcript=said)
        return results


# Markup anywhere in a line; a model's text never starts one of our lines, so list and heading
# markers ("1.", "-", "#" at a line's start) need no escape.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~<>])")


def plain(text: str) -> str:
    """``text`` shown as it is in Markdown: a model's rationale is not markup."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _num(value, digits: int = 2, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{' ' + unit if unit else ''}"


def evidence_rows(evidence: dict, stats: dict) -> list[list[str]]:
    """The evidence table of one clip: cue, value, baseline (mean ± sd), z (EVIDENCE_HEADERS)."""
    if evidence.get("error"):
        return [["error", evidence["error"], "", ""]]
    rows = []
    for f in Z_FEATURES:
        unit, digits = Z_FEATURE_UNITS[f], 4 if f == "spectral_slope" else 2  # the slope is about 0.001
        mean_sd = stats.get(f)
        base = f"{_num(mean_sd[0], digits)} ± {_num(mean_sd[1], digits, unit)}" if mean_sd else "n/a"
        z = evidence["z"].get(f)
        rows.append([f"{FEATURE_NAMES.get(f, f)} ({f})", _num(evidence["values"].get(f), digits, unit), base,
                     "n/a" if z is None else f"{z:+.2f}"])
    lexical = evidence.get("lexical")
    if lexical is not None:
        hits = ", ".join(f"{'not ' if h['negated'] else ''}{h['word']} ({h['category']})" for h in lexical["hits"])
        rows.append(["emotion words in the transcript", hits or "none", "", ""])
    for flag in evidence.get("flags", []):
        rows.append([f"flag: {flag}", "yes", "", ""])
    return rows


def claim_rows(verdict) -> list[list[str]]:
    """Each claim of a verified rationale: claim, kind, verdict, reason (CLAIM_HEADERS)."""
    return [[c["text"], c["kind"] if c["kind"] != "cue" else f"cue: {c['cue']}",
             "✓ supported" if c["supported"] else "✗ not supported", c["reason"]] for c in verdict.claims]


def rationale_markdown(result: dict) -> str:
    pred, verdict = result["prediction"], result["verdict"]
    if pred["rationale"] is None:
        return "No rationale."
    text = plain(pred["rationale"])
    if verdict is None:
        return f"**Rationale** (greedy, written by the model): {text}\n\nNot verified: the clip has no evidence."
    supported = sum(c["supported"] for c in verdict.claims)
    counted = f"{supported} of {len(verdict.claims)} claims supported" if verdict.claims else "no claim found in it"
    head = f"**Verifier: {'passed' if verdict.passed else 'not passed'}**, {counted}"
    problems = "".join(f"\n- {plain(p)}" for p in verdict.problems)
    return (f"**Rationale** (greedy, written by the model): {text}\n\n{head}. The stated emotion is checked "
            f"against {MODEL_LABEL}, cues against the z-scores below.{problems}")


def va_svg(valence: float, arousal: float, size: int = 320) -> str:
    """The valence-arousal plane as inline SVG, quadrants named, with the clip as a point."""
    pad, half = 36, (size - 72) / 2
    cx = cy = size / 2
    x, y = cx + max(-1.0, min(1.0, valence)) * half, cy - max(-1.0, min(1.0, arousal)) * half
    corner = {(True, True): (cx + half - 4, pad + 14, "end"), (False, True): (pad + 4, pad + 14, "start"),
              (False, False): (pad + 4, size - pad - 6, "start"), (True, False): (cx + half - 4, size - pad - 6, "end")}
    names = "".join(f'<text x="{tx:.0f}" y="{ty:.0f}" text-anchor="{anchor}" font-size="12" fill="#555">'
                    f'{QUADRANTS[q]}</text>' for q, (tx, ty, anchor) in corner.items())
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="va-plane" width="{size}" height="{size}" '
            f'viewBox="0 0 {size} {size}" role="img" aria-label="valence {valence:+.2f}, arousal {arousal:+.2f}">'
            f'<rect x="{pad}" y="{pad}" width="{2 * half:.0f}" height="{2 * half:.0f}" fill="#fafafa" stroke="#999"/>'
            f'<line x1="{pad}" y1="{cy}" x2="{size - pad}" y2="{cy}" stroke="#999"/>'
            f'<line x1="{cx}" y1="{pad}" x2="{cx}" y2="{size - pad}" stroke="#999"/>{names}'
            f'<text x="{size - pad}" y="{cy - 6}" text-anchor="end" font-size="11">valence +1</text>'
            f'<text x="{pad}" y="{cy - 6}" font-size="11">-1</text>'
            f'<text x="{cx + 6}" y="{pad - 8}" font-size="11">arousal +1</text>'
            f'<text x="{cx + 6}" y="{size - pad + 16}" font-size="11">-1</text>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="#d9480f" stroke="white" stroke-width="2"/>'
            f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle" font-size="13">valence {valence:+.2f}, '
            f'arousal {arousal:+.2f}: {quadrant(valence, arousal)}</text></svg>')


def explain_one(model: DemoModel, audio: str | None, transcript: str | None = None) -> tuple:
    """The single-clip page's outputs: status, probabilities ({label: p}), VA plane (HTML),
    evidence table, rationale (Markdown), claims table, transcript."""
    empty = ("", None, "", [], "", [], "")
    if not audio:
        return ("Upload or record a clip, or pick an example, then press **Explain**.", *empty[1:])
    (result,) = model.analyse([audio], transcript)
    if result["error"]:
        return (f"⚠️ {plain(result['error'])}", *empty[1:])
    pred, ev = result["prediction"], result["evidence"]
    status = (f"**{plain(result['clip'])}** ({pred['duration']:.2f} s): **{pred['emotion']}** "
              f"(p = {pred['probabilities'][pred['emotion']]:.2f}). {model.baseline_note(ev)}")
    return (status, dict(pred["probabilities"]), va_svg(pred["valence"], pred["arousal"]),
            evidence_rows(ev, result["stats"]), rationale_markdown(result),
            claim_rows(result["verdict"]) if result["verdict"] else [], result["transcript"] or "")


def explain_many(model: DemoModel, files: list | None) -> tuple[str, list[list]]:
    """The several-clips page's outputs: status and the table (CLIPS_HEADERS), a row per clip."""
    paths = [f if isinstance(f, str) else f.name for f in (files or [])]
    if not paths:
        return "Upload one or more clips, then press **Explain all**.", []
    table = []
    for r in model.analyse(paths):
        if r["error"]:
            table.append([r["clip"], "", "", "", "", "", "", "", "", "", r["error"]])
            continue
        p, v = r["prediction"], r["verdict"]
        verdict = "n/a" if v is None else (f"{'passed' if v.passed else 'not passed'} "
                                           f"({sum(c['supported'] for c in v.claims)}/{len(v.claims)} claims)")
        table.append([r["clip"], f"{p['duration']:.2f}", p["emotion"], f"{p['probabilities'][p['emotion']]:.3f}",
                      f"{p['valence']:+.2f}", f"{p['arousal']:+.2f}", quadrant(p["valence"], p["arousal"]),
                      verdict, p["rationale"] or "", r["transcript"] or "", ""])
    bad = sum(1 for row in table if row[-1])
    status = f"{len(table) - bad} of {len(table)} clips explained" + (f"; {bad} could not be used." if bad else ".")
    return status, table


def build_app(model: DemoModel, examples_dir: Path = SAMPLES_DIR):
    """The Gradio app: a tab for one clip and a tab for several."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    import gradio as gr

    examples = [[str(examples_dir / name)] for name in EXAMPLE_CLIPS if (examples_dir / name).is_file()]
    ckpt = model.explainer.checkpoint
    with gr.Blocks(title="emoreason demo", analytics_enabled=False) as app:
        gr.Markdown(f"# emoreason: emotion in speech, explained\nModel `{ckpt}`; labels "
                    f"{', '.join(model.labels)}. Probabilities come from scoring each label under the model; "
                    "each claim of the rationale is checked against cues measured in the clip.")
        with gr.Tab("One clip"):
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip",
                                     elem_id="clip")
                    said = gr.Textbox(label="Transcript (optional: used for the lexical evidence and quoted words"
                                      + ("; the model writes its own" if model.asr else "") + ")",
                                      visible=not model.asr, elem_id="typed-transcript")
                    button = gr.Button("Explain", variant="primary", elem_id="explain")
                    if examples:
                        gr.Examples(examples, inputs=[audio], label="Bundled examples (a held-out synthetic voice)")
                with gr.Column():
                    status = gr.Markdown(elem_id="status")
                    probs = gr.Label(num_top_classes=len(model.labels), label="Label probabilities",
                                     elem_id="probabilities")
                    plane = gr.HTML(label="Valence and arousal", elem_id="va")
            transcript = gr.Textbox(label="Transcript (the model's own, ASR)", visible=model.asr,
                                    interactive=False, elem_id="transcript")
            rationale = gr.Markdown(elem_id="rationale")
            claims = gr.Dataframe(headers=CLAIM_HEADERS, label="Claims of the rationale, verified",
                                  interactive=False, wrap=True, elem_id="claims")
            evidence = gr.Dataframe(headers=EVIDENCE_HEADERS, label="Evidence measured in the clip",
                                    interactive=False, elem_id="evidence")
            button.click(lambda a, t: explain_one(model, a, t), [audio, said],
                         [status, probs, plane, evidence, rationale, claims, transcript])
        with gr.Tab("Several clips"):
            files = gr.File(file_count="multiple", label="Clips", elem_id="clips")
            many = gr.Button("Explain all", variant="primary", elem_id="explain-all")
            many_status = gr.Markdown(elem_id="many-status")
            table = gr.Dataframe(headers=CLIPS_HEADERS, interactive=False, wrap=True, column_widths=CLIPS_WIDTHS,
                                 elem_id="table")
            many.click(lambda f: explain_many(model, f), [files], [many_status, table])
    return app


def launch(app, host: str, port: int, share: bool = False, block: bool = True):
    """Serve ``app`` on ``host:port``; a port taken meanwhile is a UserError naming it."""
    try:
        return app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                          max_file_size="200mb", quiet=False, footer_links=[])
    except OSError as err:
        raise UserError(f"port {port} on {host}: cannot serve there ({err}); pass --port with a free port.") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint or export folder, or a run folder (its latest)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link (needs a network)")
    parser.add_argument("--baseline", default=None,
                        help="a manifest with measured evidence to z-score uploads against (default: the training rows)")
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                        help=f"longest clip accepted, in seconds (default {MAX_SECONDS:g})")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="length limit of the rationale")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise UserError(f"the demo needs gradio ({err}): pip install 'emoreason[demo]'.") from err
    resolve_device(args.device)
    check_port(args.host, args.port)  # before the model loads, which takes a while
    model = DemoModel(args.checkpoint, args.baseline, args.max_seconds, args.max_new_tokens, args.device)
    log.info("corpus baseline for uploads: %d clips from %s", len(model.reference), model.reference_source)
    launch(build_app(model), args.host, args.port, args.share)
    return 0
