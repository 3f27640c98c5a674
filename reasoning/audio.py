"""Reading audio into the one form every stage uses: mono float32 at 16 kHz.

Rules (documented in the README, section "Audio"):

* Decoding uses soundfile (WAV, FLAC, OGG, ...). Containers soundfile cannot read (MP4,
  M4A, MP3 on old libsndfile) are decoded by the ``ffmpeg`` program when it is installed.
* Several channels are averaged to one.
* Any other sample rate is resampled to 16 kHz with a polyphase filter
  (``scipy.signal.resample_poly``, Kaiser window), which is exact for the common ratios
  (8 → 16 kHz is up 2, 48 → 16 kHz is down 3, 22.05 → 16 kHz is 320/441).
* ``start``/``end`` (seconds) cut a segment out of a longer file.
* A file with no samples is an error; a silent file is returned as it is (the evidence
  stage reports it as unvoiced rather than inventing a pitch).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from reasoning.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(
            f"{path}: soundfile cannot decode this format and ffmpeg is not installed. "
            "Install ffmpeg (apt-get install ffmpeg) or convert the file to WAV."
        )
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(
            f"{path}: not a readable audio file ({msg[-1] if msg else 'ffmpeg failed'}). "
            "Check that the file is complete, or remove it from the manifest."
        )
    return np.frombuffer(proc.stdout, dtype=np.float32).copy(), SAMPLE_RATE


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a 1-D signal; returns float32 of length ~len*target/orig."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(orig_sr, target_sr)
    return resample_poly(wave, target_sr // g, orig_sr // g).astype(np.float32)


def load_audio(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``.

    Returns an array of shape ``(num_samples,)`` with values in [-1, 1].
    Raises :class:`AudioError` naming the file for a missing, unreadable or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file. Check the path (manifest 'audio' "
                         "paths are relative to the manifest's folder).")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        wave, sr = _decode_with_ffmpeg(path)
        first = int(round(start * sr)) if start else 0
        wave = wave[first:int(round(end * sr)) if end is not None else None]
    else:
        sr = info.samplerate
        first = int(round(start * sr)) if start else 0
        last = int(round(end * sr)) if end is not None else None
        try:
            data, sr = sf.read(str(path), start=first, stop=last, dtype="float32",
                               always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{path}: the audio data cannot be read ({err}). The file may be "
                             "truncated; re-export it or remove it from the manifest.") from err
        wave = data.mean(axis=1)
    if wave.size == 0:
        raise AudioError(f"{path}: the clip has no samples"
                         + (f" between {start} s and {end} s" if start or end else "")
                         + ". Remove it from the manifest or fix its start/end.")
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{path}: the audio contains NaN or infinite samples. Re-export it.")
    return resample(wave, sr, sample_rate)


def duration(row: dict) -> float:
    """Seconds of audio a manifest row uses, from ``start``/``end`` or the file's header
    (0.0 when the header cannot be read: the clip is then reported when it is loaded)."""
    if row.get("end") is not None:
        return float(row["end"]) - float(row.get("start") or 0.0)
    try:
        info = sf.info(str(row["audio"]))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return 0.0
    return info.frames / info.samplerate - float(row.get("start") or 0.0)
