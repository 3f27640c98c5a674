"""What a corpus loader hands to :func:`reasoning.prepare.prepare`, and the options it reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from reasoning import files
from reasoning.prepare.splits import DEFAULT_FRACTIONS
from reasoning.prepare.va import DerivedVAConfig

# Internal row keys start with "_" and never reach the manifest:
#   _src    the audio file as the user has it (decoded to check it and measure it)
#   _dst    where to extract a 16 kHz WAV from _src (MELD's MP4 clips)
#   _where  "file:line" of the annotation the row came from, for messages


@dataclass
class PrepareOptions:
    """Options of :func:`reasoning.prepare.prepare` (the CLI flags of `emoreason prepare`)."""

    labels_only: bool = False     # write the manifest from the annotations, read no audio
    force: bool = False           # redo the work even if the manifest is up to date
    protocol: str | None = None   # label protocol; None = the dataset's default
    split: str | None = None      # official | loso | speaker-random | random; None = default
    seed: int = 0                 # seed of random splits
    fractions: tuple = DEFAULT_FRACTIONS   # train/dev/test shares of random splits
    workers: int = 2              # processes for the audio stage
    clips: str | None = None      # MELD: folder holding the clip folders (default: root)
    name: str | None = None       # generic: dataset name (default: the root's name)
    columns: dict = field(default_factory=dict)    # generic: manifest key -> user's column
    label_map: dict = field(default_factory=dict)  # generic: user's label -> canonical label
    labels: list | None = None    # generic: the label set of the protocol
    va_range: tuple = (1.0, 5.0)  # generic: scale of annotated VA columns (mapped to [-1, 1])
    keep_other: bool = False      # relabel rows outside the protocol "other" (and keep them in it)
    derive_va: bool = True        # derive VA from acoustics when the corpus has none
    va_config: DerivedVAConfig = field(default_factory=DerivedVAConfig)

    def fingerprint_dict(self) -> dict:
        """The options that change the output (not force/workers)."""
        d = asdict(self)
        for key in ("force", "workers"):
            d.pop(key)
        d["fractions"] = list(d["fractions"])
        d["va_range"] = list(d["va_range"])
        return d


@dataclass
class Corpus:
    """A parsed corpus before its audio is read."""

    dataset: str
    rows: list[dict]
    inputs: list[Path] = field(default_factory=list)   # annotation files read
    dropped: list[dict] = field(default_factory=list)  # {"id", "where", "reason"}: not in manifest
    problems: list[str] = field(default_factory=list)  # file-level trouble, with the fix
    notes: list[str] = field(default_factory=list)     # facts the card states
    va_source: str | None = None                       # "annotated" or "derived"
    va_description: str | None = None                  # card text for annotated VA, if not the usual
    audio_origin: str = "read in place under the root"  # card text: where the clips were read
    default_split: str = "official"
    official_speaker_disjoint: bool = True
    labels: tuple = ()                                 # the protocol's label set, resolved

    def drop(self, row_id: str | None, where: str, reason: str) -> None:
        """Leave a row out of the manifest, with the reason the card shows."""
        self.dropped.append({"id": row_id, "where": where, "reason": reason})


GENDERS = {"f": "f", "female": "f", "woman": "f", "w": "f",
           "m": "m", "male": "m", "man": "m"}


def normalise_gender(value) -> str | None:
    """``"f"``/``"m"`` from the usual spellings; None when empty or unknown."""
    if value is None:
        return None
    return GENDERS.get(str(value).strip().lower())


def find_dir(root: Path, name: str, depth: int = 2) -> Path | None:
    """``root/name`` or the first ``root/*/name`` ... down to ``depth`` levels, else None."""
    pattern = name
    for _ in range(depth + 1):
        hits = sorted(p for p in root.glob(pattern) if p.is_dir())
        if hits:
            return hits[0]
        pattern = "*/" + pattern
    return None


def find_file(root: Path, name: str, depth: int = 2) -> Path | None:
    """Like :func:`find_dir` for a file."""
    pattern = name
    for _ in range(depth + 1):
        hits = sorted(p for p in root.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
        pattern = "*/" + pattern
    return None


def file_stamp(path: str | Path) -> str:
    """Size and modification time of a file (``"missing"`` when absent): how prepare tells
    an input that changed (edited, re-recorded, re-extracted) from the one it read before,
    without reading it. The format is part of every output's fingerprint: changing it
    would make every earlier output look stale."""
    try:
        size, mtime_ns = files.file_stamp(path)
    except OSError:
        return "missing"
    return f"{size}\0{mtime_ns}"
