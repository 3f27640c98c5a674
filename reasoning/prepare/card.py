"""The dataset card written next to every manifest: ``card.json`` (all of it) and
``card.md`` (the same, for people)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from reasoning.files import atomic_file

CARD_JSON = "card.json"
CARD_MD = "card.md"
MD_SPEAKERS = 25    # card.md shows the most frequent speakers; card.json has them all


def split_order(name: str) -> tuple:
    """train, dev, test first, then folds in natural order (session2 before session10)."""
    fixed = {"train": 0, "dev": 1, "test": 2}
    if name in fixed:
        return (0, fixed[name])
    return (1, tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)))


def counts(rows: list[dict]) -> dict:
    """Label x split, speaker and gender counts of the manifest rows."""
    by_split: dict[str, Counter] = defaultdict(Counter)
    speakers: dict[str, dict] = {}
    for row in rows:
        by_split[row["split"] or "(none)"][row["emotion"] or "(none)"] += 1
        key = row["speaker"] or "(none)"
        entry = speakers.setdefault(key, {"gender": row["gender"], "rows": 0, "splits": set()})
        entry["rows"] += 1
        entry["splits"].add(row["split"] or "(none)")
    for entry in speakers.values():
        entry["splits"] = sorted(entry["splits"])
    return {
        "label_by_split": {s: dict(sorted(by_split[s].items()))
                           for s in sorted(by_split, key=split_order)},
        "speakers": dict(sorted(speakers.items(), key=lambda kv: (-kv[1]["rows"], kv[0]))),
        "gender": dict(sorted(Counter(r["gender"] or "unknown" for r in rows).items())),
    }


def duration_stats(durations: list[float]) -> dict | None:
    """Count, total hours and the distribution of clip durations in seconds."""
    if not durations:
        return None
    d = np.asarray(durations, dtype=np.float64)
    return {"clips": int(d.size), "total_hours": round(float(d.sum()) / 3600, 3),
            "mean": round(float(d.mean()), 3), "min": round(float(d.min()), 3),
            "p5": round(float(np.percentile(d, 5)), 3),
            "median": round(float(np.median(d)), 3),
            "p95": round(float(np.percentile(d, 95)), 3), "max": round(float(d.max()), 3)}


def _write(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # A "|" inside a cell (e.g. "<F|M>" in a reason) would split the cell.
    lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in rows]
    return lines


def render_markdown(card: dict) -> str:
    """card.md from the card dict."""
    c = card["counts"]
    out = [f"# Dataset card: {card['dataset']}", "",
           f"Prepared by `{card['command']}` (emoreason {card['version']}).", "",
           f"- Source: `{card['root']}`",
           f"- Manifest: `{card['manifest']}`: {card['rows']} rows",
           f"- Audio: {card['audio']}",
           f"- Protocol: `{card['protocol']['name']}`: {card['protocol']['description']} "
           f"Labels: {', '.join(card['protocol']['labels']) or '(every label)'}. "
           f"{card['protocol']['rows_in']} rows in the protocol, "
           f"{len(card['protocol']['excluded'])} excluded by it (kept in the manifest, listed "
           "below).",
           f"- Split: `{card['split']['strategy']}`: {card['split']['description']}",
           f"- Valence/arousal: {card['va']['description']}",
           f"- Rows not in the manifest: {len(card['dropped'])} (listed below)", ""]
    splits = list(c["label_by_split"])
    labels = sorted({lab for s in splits for lab in c["label_by_split"][s]})
    out += ["## Counts per label and split", ""]
    table = [[lab] + [c["label_by_split"][s].get(lab, 0) for s in splits]
             + [sum(c["label_by_split"][s].get(lab, 0) for s in splits)] for lab in labels]
    table.append(["**total**"] + [sum(c["label_by_split"][s].values()) for s in splits]
                 + [card["rows"]])
    out += _table(["label"] + splits + ["total"], table) + [""]
    out += ["## Speakers and gender", "",
            "Gender: " + ", ".join(f"{g} {n}" for g, n in c["gender"].items()), ""]
    speakers = list(c["speakers"].items())
    out += _table(["speaker", "gender", "rows", "splits"],
                  [[s, e["gender"] or "?", e["rows"], ", ".join(e["splits"])]
                   for s, e in speakers[:MD_SPEAKERS]])
    if len(speakers) > MD_SPEAKERS:
        rest = speakers[MD_SPEAKERS:]
        out.append(f"\n... and {len(rest)} more speakers with {sum(e['rows'] for _, e in rest)} "
                   f"rows between them (at most {rest[0][1]['rows']} each); card.json lists all.")
    out += ["", "## Durations (seconds)", ""]
    if card["durations"]:
        d = card["durations"]
        out += [f"Measured on: {card['durations_source']}.", ""]
        out += _table(list(d), [list(d.values())])
    else:
        out.append("No durations: no audio was read and the annotations give no times.")
    out += ["", f"## Rows not in the manifest ({len(card['dropped'])})", ""]
    if card["dropped"]:
        out += _table(["id", "where", "reason"],
                      [[d["id"] or "-", f"`{d['where']}`", d["reason"]] for d in card["dropped"]])
    else:
        out.append("None.")
    excluded = card["protocol"]["excluded"]
    out += ["", f"## Rows excluded by the protocol `{card['protocol']['name']}` "
                f"({len(excluded)})", ""]
    if excluded:
        grouped = defaultdict(list)
        for e in excluded:
            grouped[e["reason"]].append(e["id"])
        for reason, ids in grouped.items():
            out += [f"<details><summary>{reason}: {len(ids)} rows</summary>", "",
                    ", ".join(ids), "", "</details>", ""]
    else:
        out.append("None.")
    out += ["", "## Problems found in the input", ""]
    out += [f"- {p}" for p in card["problems"]] or ["None."]
    out += ["", "## Notes", ""] + [f"- {n}" for n in card["notes"]]
    return "\n".join(out) + "\n"


def write_card(card: dict, out: Path) -> tuple[Path, Path]:
    """Write ``card.json`` and ``card.md`` into ``out`` (atomically)."""
    json_path, md_path = out / CARD_JSON, out / CARD_MD
    _write(json_path, json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    _write(md_path, render_markdown(card))
    return md_path, json_path


def read_card(out: Path) -> dict | None:
    """The card.json in ``out``, or None when absent or unreadable."""
    try:
        return json.loads((out / CARD_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
