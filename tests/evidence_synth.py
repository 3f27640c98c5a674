"""Synthetic speech-like signals with known pitch, loudness, syllables and pauses."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

SR = 16_000


def glottal_pulses(f0: float, dur: float, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """A pulse train at ``f0`` Hz, integrated (a glottal-like tilt) and passed through three
    formant resonators (500, 1500, 2500 Hz): a crude sustained vowel."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(dur * SR))
    t = 0.0
    while t < dur:
        if int(t * SR) < len(x):
            x[int(t * SR)] = 1.0
        t += (1.0 / f0) * (1.0 + jitter * rng.standard_normal())
    x = lfilter([1.0], [1.0, -0.97], x)
    for fc, bw in ((500, 80), (1500, 120), (2500, 200)):
        r = np.exp(-np.pi * bw / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], x)
    return x


def speech(f0: float = 120.0, n_syll: int = 8, syl: float = 0.18, gap: float = 0.07,
           pauses: tuple[int, ...] = (), pause_s: float = 0.5, amp: float = 0.3,
           jitter: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``n_syll`` voiced syllables (Hann-shaped bursts of ``syl`` s, ``gap`` s apart) with a
    pause of ``pause_s`` after each syllable index in ``pauses``, 0.2 s of silence at
    both ends. Returns float32 at 16 kHz, peak ``amp``."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(0.2 * SR))]
    for k in range(n_syll):
        s = glottal_pulses(f0, syl, jitter, seed + k)
        parts += [s / np.max(np.abs(s)) * np.hanning(len(s)), np.zeros(int(gap * SR))]
        if k in pauses:
            parts.append(np.zeros(int(pause_s * SR)))
    parts.append(np.zeros(int(0.2 * SR)))
    x = np.concatenate(parts) * amp
    if noise:
        x = x + noise * rng.standard_normal(len(x))
    return x.astype(np.float32)


def write_wav(path, wave: np.ndarray, sr: int = SR):
    sf.write(str(path), wave, sr, subtype="PCM_16")
    return path
