"""The audio stage of preparation: extract (MP4 -> 16 kHz WAV, cached), decode, measure.

Each clip is one task run in a pool of worker processes; a clip that fails gives an error
message naming the file instead of stopping the corpus.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.errors import AudioError, UserError
from reasoning.files import atomic_path
from reasoning.prepare.va import DerivedVAConfig, clip_features


@dataclass(frozen=True)
class ClipTask:
    src: str                    # the file as the user has it
    dst: str | None = None      # WAV to extract to (MELD); None: read src directly
    start: float | None = None
    end: float | None = None
    features: bool = True       # measure the derived-VA features
    va_config: DerivedVAConfig | None = None


def require_ffmpeg() -> None:
    """Raise a UserError saying how to install ffmpeg when it is missing."""
    if shutil.which("ffmpeg") is None:
        raise UserError("ffmpeg is not installed, and it is needed to extract audio from the "
                        "MP4 clips. Install it (e.g. `apt-get install ffmpeg`), or pass "
                        "--labels-only to write the manifest without audio.")


def extract_wav(src: str, dst: str) -> bool:
    """Extract ``src``'s audio to a 16 kHz mono PCM WAV at ``dst``; False when cached.

    The WAV is written to a temporary name and renamed, so an interrupted run never leaves
    a half file that a later run would take as done. It is redone when ``src`` is newer.
    """
    if os.path.isfile(dst) and os.path.getsize(dst) > 44 and \
            os.path.getmtime(dst) >= os.path.getmtime(src):
        return False
    with atomic_path(dst, suffix=".wav") as tmp:
        # One thread per ffmpeg: the pool already puts one process on each core.
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-threads", "1", "-i", src, "-vn",
               "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0 or tmp.stat().st_size == 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise AudioError(f"{src}: ffmpeg could not extract its audio "
                             f"({lines[-1] if lines else 'no audio stream'}). The clip may be "
                             "truncated or have no audio track; re-download it.")
    return True


_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be\s*(\d+)\)", re.M)


def check_complete(path: str) -> None:
    """Raise AudioError when a WAV holds less audio than its header promises.

    libsndfile reads a cut-off WAV without complaint (it returns the samples that are
    there), so a half-copied file would otherwise pass as a shorter clip. Headers that
    streaming writers leave at 0 or 0xFFFFFFFF are not taken as truncation.
    """
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError):
        return      # not a soundfile format: load_audio decodes (or rejects) it
    m = _DATA_SIZE.search(info.extra_info or "")
    if m:
        declared, actual = int(m.group(1)), int(m.group(2))
        if actual < declared and declared not in (0, 0xFFFFFFFF, 0xFFFFFFFF - 8):
            raise AudioError(f"{path}: truncated: the header promises {declared} bytes of audio "
                             f"but the file holds {actual}. Copy or download the file again.")


def process_clip(task: ClipTask) -> dict:
    """Extract (if asked), decode and measure one clip.

    Returns ``{"ok": True, "duration": s, "features": {...} or None, "extracted": bool}`` or
    ``{"ok": False, "error": message naming the file}``.
    """
    path = task.dst or task.src
    try:
        extracted = extract_wav(task.src, task.dst) if task.dst else False
        check_complete(path)
        wave = load_audio(path, task.start, task.end)
    except AudioError as err:
        return {"ok": False, "error": str(err)}
    except (OSError, RuntimeError, ValueError) as err:
        # Anything else a damaged file can raise in a decoder: one clip, not the corpus.
        return {"ok": False, "error": f"{path}: cannot be read ({type(err).__name__}: {err}). "
                                      "Re-export the file or remove it."}
    features = clip_features(wave, SAMPLE_RATE, task.va_config) if task.features else None
    return {"ok": True, "duration": round(wave.size / SAMPLE_RATE, 4), "features": features,
            "extracted": extracted}


def process_clips(tasks: list[ClipTask], workers: int = 2, desc: str = "clips") -> list[dict]:
    """:func:`process_clip` over every task, in ``workers`` processes, results in task order."""
    if not tasks:
        return []
    workers = max(1, min(workers, len(tasks)))
    bar = dict(total=len(tasks), desc=desc, unit="clip", disable=None, mininterval=2.0)
    if workers == 1:
        return [process_clip(t) for t in tqdm(tasks, **bar)]
    # Chunks amortise the inter-process hand-off (clips take milliseconds each).
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(process_clip, tasks, chunksize=chunk), **bar))


def manifest_audio_path(path: str | Path, out: Path) -> str:
    """The ``audio`` value: relative to the manifest folder when inside it, else absolute."""
    path = Path(path).absolute()
    try:
        return path.relative_to(out.absolute()).as_posix()
    except ValueError:
        return str(path)
