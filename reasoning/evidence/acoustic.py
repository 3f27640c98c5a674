"""Acoustic measurements of one clip with openSMILE (eGeMAPS v02 LLDs) and Praat.

Who measures what, and why:

* **Praat (parselmouth)** gives the pitch track (autocorrelation, 75-600 Hz), the intensity
  contour, jitter, shimmer (cross-correlation point process) and HNR (cross-correlation
  harmonicity). These are the reference implementations of those voice-quality measures.
* **openSMILE eGeMAPS v02** gives the perceptual loudness and the spectral slope
  (500-1500 Hz) frame by frame. We average its low-level descriptors over the frames we
  choose (speech frames for loudness, voiced frames for the slope) rather than taking its
  functionals, because corpus clips are often padded with silence (EmoDB's shared copy is
  cut or zero-padded to 2 s) and a mean over padding measures the padding.
* **Speaking rate** counts syllable nuclei as de Jong & Wempe (2009) do: peaks of the
  intensity contour above a silence threshold (0.99 quantile minus 25 dB), standing at least
  2 dB above the dip before them, and voiced. Pauses are silent stretches of at least
  ``MIN_PAUSE_S`` between the first and the last sounding frame (leading and trailing
  silence is not a pause: it is how the clip was cut).

Units: F0 in Hz and in semitones relative to 27.5 Hz (as eGeMAPS), loudness in openSMILE's
sone-like units, rates per second of phonation time (speech minus pauses), jitter and
shimmer in percent, HNR in dB, spectral slope in dB/Hz.

A clip whose peak is below ``SILENCE_PEAK`` is flagged ``silent`` and every value except the
duration is ``None``. A clip with fewer than ``MIN_VOICED_FRAMES`` pitch frames is flagged
``unvoiced`` and its F0 and voice-quality values are ``None``: no pitch is ever invented.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

log = logging.getLogger(__name__)

PITCH_FLOOR_HZ = 75.0
PITCH_CEILING_HZ = 600.0
FRAME_S = 0.01
SILENCE_DB = 25.0          # below the 0.99 intensity quantile: silence (de Jong & Wempe)
MIN_DIP_DB = 2.0           # a syllable nucleus stands this far above the dip before it
MIN_PAUSE_S = 0.25         # shorter silences are stop closures and breaths, not pauses
MIN_VOICED_FRAMES = 10     # 0.1 s of pitch before we report an F0 at all
SILENCE_PEAK = 1e-4        # -80 dBFS
ST_REFERENCE_HZ = 27.5

# The values measured from the audio alone (what the cache stores), in schema order.
ACOUSTIC_FEATURES = (
    "duration_s", "speech_s", "voiced_s", "f0_mean_hz", "f0_mean_st", "f0_range_st",
    "f0_sd_st", "loudness", "syllable_rate", "n_syllables", "pause_ratio", "n_pauses",
    "jitter_local", "shimmer_local", "hnr_db", "spectral_slope",
)


@functools.lru_cache(maxsize=1)
def _smile():
    import opensmile  # imported lazily: building the extractor takes a moment

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.LowLevelDescriptors)


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the True runs of a boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2]))


def _sounding(intensity: np.ndarray) -> tuple[np.ndarray, float]:
    """Frames louder than the silence threshold, with short gaps closed."""
    finite = intensity[intensity > -200]  # Praat writes -300 dB for digital silence
    threshold = max(np.quantile(finite, 0.99) - SILENCE_DB, finite.min())
    mask = intensity >= threshold
    min_gap = int(round(MIN_PAUSE_S / FRAME_S))
    runs = _runs(~mask)
    for a, b in runs:
        if a > 0 and b < len(mask) and b - a < min_gap:
            mask[a:b] = True
    return mask, threshold


def _nuclei(intensity: np.ndarray, threshold: float, voiced: np.ndarray) -> int:
    """Count syllable nuclei: voiced intensity peaks above threshold with a 2 dB dip."""
    i = intensity
    peaks = np.flatnonzero((i[1:-1] > i[:-2]) & (i[1:-1] >= i[2:]) & (i[1:-1] >= threshold)) + 1
    count, last = 0, None
    for p in peaks:
        start = 0 if last is None else last
        dip = i[start:p + 1].min()
        if i[p] - dip >= MIN_DIP_DB and voiced[p]:
            count += 1
            last = p
        elif last is not None and i[p] > i[last] and i[last:p + 1].min() >= i[last] - MIN_DIP_DB:
            last = p  # the same nucleus rising further: move it to the higher peak
    return count


def measure_acoustics(wave: np.ndarray, sample_rate: int) -> tuple[dict, list[str]]:
    """Measure one clip. ``wave``: shape ``(num_samples,)`` float.

    Returns ``(values, flags)``: ``values`` maps every name of :data:`ACOUSTIC_FEATURES`
    to a float or ``None``; ``flags`` lists ``silent`` / ``unvoiced`` when they apply.
    """
    import parselmouth
    from parselmouth.praat import call

    wave = np.asarray(wave, dtype=np.float64)
    values: dict = dict.fromkeys(ACOUSTIC_FEATURES)
    values["duration_s"] = len(wave) / sample_rate
    if len(wave) == 0 or np.max(np.abs(wave)) < SILENCE_PEAK:
        return values, ["silent", "unvoiced"]

    snd = parselmouth.Sound(wave, sample_rate)
    pitch = snd.to_pitch_ac(time_step=FRAME_S, pitch_floor=PITCH_FLOOR_HZ,
                            pitch_ceiling=PITCH_CEILING_HZ)
    intensity = snd.to_intensity(minimum_pitch=50.0, time_step=FRAME_S)
    i_db = intensity.values[0]
    i_t = intensity.xs()
    if len(i_db) < 3 or not np.any(i_db > -200):
        return values, ["silent", "unvoiced"]

    f0_track = pitch.selected_array["frequency"]
    f0_t = pitch.xs()
    voiced_at_i = np.interp(i_t, f0_t, (f0_track > 0).astype(float), left=0, right=0) > 0.5

    # Speech span, pauses and phonation time.
    mask, threshold = _sounding(i_db.copy())
    runs = _runs(mask)
    flags: list[str] = []
    if not runs:
        return values, ["silent", "unvoiced"]
    first, last = runs[0][0], runs[-1][1]
    pauses = [(a, b) for a, b in _runs(~mask[first:last])]
    pause_frames = sum(b - a for a, b in pauses)
    span_s = (last - first) * FRAME_S
    speech_s = max(span_s - pause_frames * FRAME_S, FRAME_S)
    n_syll = _nuclei(i_db, threshold, voiced_at_i)
    values.update(speech_s=speech_s, pause_ratio=pause_frames * FRAME_S / span_s,
                  n_pauses=float(len(pauses)), n_syllables=float(n_syll),
                  syllable_rate=n_syll / speech_s)

    # openSMILE LLDs averaged over speech frames (loudness) and voiced frames (slope).
    lld = _smile().process_signal(wave.astype(np.float32), sample_rate)
    centre = (lld.index.get_level_values("start").total_seconds().to_numpy()
              + lld.index.get_level_values("end").total_seconds().to_numpy()) / 2
    in_speech = np.interp(centre, i_t, mask.astype(float), left=0, right=0) > 0.5
    loud = lld["Loudness_sma3"].to_numpy()
    values["loudness"] = _finite(loud[in_speech].mean()) if in_speech.any() else None
    smile_voiced = lld["F0semitoneFrom27.5Hz_sma3nz"].to_numpy() > 0
    slope = lld["slope500-1500_sma3"].to_numpy()
    if smile_voiced.any():
        values["spectral_slope"] = _finite(slope[smile_voiced].mean())

    # Pitch and voice quality, only when there is enough voicing to trust them.
    f0 = f0_track[f0_track > 0]
    values["voiced_s"] = len(f0) * FRAME_S
    if len(f0) < MIN_VOICED_FRAMES:
        flags.append("unvoiced")
        return values, flags
    st = 12.0 * np.log2(f0 / ST_REFERENCE_HZ)
    p5, p95 = np.percentile(st, [5, 95])
    values.update(f0_mean_hz=float(f0.mean()), f0_mean_st=float(st.mean()),
                  f0_range_st=float(p95 - p5), f0_sd_st=float(st.std()))
    points = call([snd, pitch], "To PointProcess (cc)")
    jitter = call(points, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)
    shimmer = call([snd, points], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6)
    values["jitter_local"] = None if _finite(jitter) is None else 100.0 * jitter
    values["shimmer_local"] = None if _finite(shimmer) is None else 100.0 * shimmer
    hnr = snd.to_harmonicity_cc(time_step=FRAME_S, minimum_pitch=PITCH_FLOOR_HZ,
                                silence_threshold=0.1, periods_per_window=1.0).values[0]
    hnr = hnr[hnr > -200]  # Praat's mark for unvoiced frames
    values["hnr_db"] = _finite(hnr.mean()) if len(hnr) else None
    return values, flags
