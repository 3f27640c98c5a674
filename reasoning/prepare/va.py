"""Derived valence and arousal for corpora whose annotators gave none (MELD, EmoDB, any folder).

These values are a documented heuristic, not annotation: rows get ``va_source: "derived"``
so a user can train on them, weight them down or ignore them. Everything the formula
uses lives in :class:`DerivedVAConfig`.

Per clip (16 kHz mono), on frames of ``frame_s`` every ``hop_s``:

* ``energy_db``    = the ``energy_percentile`` percentile of the frame log-RMS (dBFS).
  A high percentile measures how loud the loud parts are, independent of pauses.
* ``level_db``     = mean frame log-RMS over the active frames (within ``active_db`` of
  the loudest frame).
* ``hf_ratio_db``  = energy in ``hf_band`` over energy in ``lf_band`` (dB) of the active
  frames: vocal effort tilts the spectrum up (like eGeMAPS' alpha ratio), and unlike
  loudness it survives a corpus whose clips were peak- or loudness-normalised.
* ``centroid_hz``  = spectral centroid of the active frames, weighted by frame energy.
* ``zcr``          = mean zero-crossing rate of the active frames (crossings per sample).

Over the corpus each feature becomes a robust z-score ``z(x) = (x - median) /
max(1.4826 * MAD, min_spread)`` clipped to +-``z_clip``. ``min_spread`` (per feature) keeps
differences below what the measurement resolves (a fraction of a dB) from being blown up
when a corpus hardly varies; a corpus of one clip gives 0.
Then, with ``prior(emotion) = (valence, arousal)`` from ``priors`` ((0, 0) when the
label has no entry)::

    arousal = clip((1 - arousal_prior_weight) * tanh(arousal_gain * (
                        w_energy * z(energy_db) + w_hf * z(hf_ratio_db)))
                   + arousal_prior_weight * prior_arousal, -1, 1)
    valence = clip((1 - valence_prior_weight) * tanh(valence_gain * (
                        w_centroid * z(centroid_hz) + w_level * z(level_db) + w_zcr * z(zcr)))
                   + valence_prior_weight * prior_valence, -1, 1)

Arousal follows loudness and vocal effort, its most robust acoustic correlates. Loudness
alone fails on normalised corpora: on the peak-normalised EmoDB copy the mean p95 frame
log-RMS is -14.0 dBFS for anger and -10.8 dBFS for sadness, while the spectral balance
orders them as expected; hence both terms. Valence has no acoustic correlate that holds
across speakers, so the emotion prior carries most of it; the acoustic term only orders
clips of one label (a brighter, fuller voice, as in smiled speech, reads a little more
positive; a noisy, breathy one a little less). The priors are hand-placed positions on
Russell's circumplex, rounded to 0.1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

FEATURES = ("energy_db", "level_db", "hf_ratio_db", "centroid_hz", "zcr")

# (valence, arousal) per canonical label, for every corpus this package prepares.
DEFAULT_PRIORS: dict[str, tuple[float, float]] = {
    "neutral": (0.0, -0.2),
    "happy": (0.7, 0.4), "happiness": (0.7, 0.4), "joy": (0.7, 0.4),
    "excited": (0.6, 0.7),
    "surprise": (0.2, 0.6), "surprised": (0.2, 0.6),
    "calm": (0.3, -0.5),
    "angry": (-0.6, 0.7), "anger": (-0.6, 0.7),
    "frustrated": (-0.5, 0.3),
    "fear": (-0.6, 0.5), "fearful": (-0.6, 0.5),
    "disgust": (-0.6, 0.2), "disgusted": (-0.6, 0.2),
    "contempt": (-0.5, 0.1),
    "sad": (-0.6, -0.5), "sadness": (-0.6, -0.5),
    "boredom": (-0.3, -0.6), "bored": (-0.3, -0.6),
}


@dataclass
class DerivedVAConfig:
    """Every constant of the derived-VA formula (see the module docstring)."""

    frame_s: float = 0.025           # analysis frame length (s)
    hop_s: float = 0.010             # frame step (s)
    floor_db: float = -100.0         # log-RMS of digital silence, so log(0) never occurs
    energy_percentile: float = 95.0  # "a high percentile" of frame log-RMS for arousal
    active_db: float = 40.0          # frames within this many dB of the loudest are "active"
    z_clip: float = 3.0              # robust z-scores are clipped to +-z_clip
    min_spread: dict = field(default_factory=lambda: {
        "energy_db": 1.0, "level_db": 1.0, "hf_ratio_db": 0.5, "centroid_hz": 20.0,
        "zcr": 0.002})               # smallest spread a z-score divides by, per feature
    lf_band: tuple = (50.0, 1000.0)     # Hz, low band of hf_ratio_db
    hf_band: tuple = (1000.0, 5000.0)   # Hz, high band of hf_ratio_db
    arousal_gain: float = 0.8
    w_energy: float = 0.5
    w_hf: float = 0.5
    arousal_prior_weight: float = 0.3
    valence_gain: float = 0.8
    w_centroid: float = 0.5
    w_level: float = 0.2
    w_zcr: float = -0.3
    valence_prior_weight: float = 0.7
    priors: dict = field(default_factory=lambda: dict(DEFAULT_PRIORS))

    def __post_init__(self) -> None:
        for name in ("arousal_prior_weight", "valence_prior_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DerivedVAConfig.{name} must be in [0, 1].")
        if self.hop_s <= 0 or self.frame_s <= 0:
            raise ValueError("DerivedVAConfig.frame_s and hop_s must be positive.")
        missing = set(FEATURES) - set(self.min_spread)
        if missing or min(self.min_spread.values()) <= 0:
            raise ValueError(f"DerivedVAConfig.min_spread needs a positive value for each of "
                             f"{', '.join(FEATURES)}.")

    def as_dict(self) -> dict:
        """Plain dict for the dataset card and the fingerprint of a prepared corpus."""
        return asdict(self)


def clip_features(wave: np.ndarray, sample_rate: int, cfg: DerivedVAConfig | None = None) -> dict:
    """The per-clip features of the formula, from a mono signal of shape ``(n,)``."""
    cfg = cfg or DerivedVAConfig()
    frame = max(2, int(round(cfg.frame_s * sample_rate)))
    hop = max(1, int(round(cfg.hop_s * sample_rate)))
    x = np.asarray(wave, dtype=np.float32)
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop].astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    db = np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), cfg.floor_db)
    active = db >= db.max() - cfg.active_db
    spectrum = np.abs(np.fft.rfft(frames[active] * np.hanning(frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    power = spectrum.sum(axis=1)
    centroids = (spectrum @ freqs) / np.maximum(power, 1e-20)
    centroid = float(np.average(centroids, weights=power)) if power.sum() > 0 else 0.0
    band = lambda lo, hi: spectrum[:, (freqs >= lo) & (freqs < hi)].sum()  # noqa: E731
    hf_ratio = 10.0 * np.log10((band(*cfg.hf_band) + 1e-20) / (band(*cfg.lf_band) + 1e-20))
    signs = np.signbit(frames[active])
    zcr = float(np.mean(signs[:, 1:] != signs[:, :-1]))
    return {
        "energy_db": float(np.percentile(db, cfg.energy_percentile)),
        "level_db": float(db[active].mean()),
        "hf_ratio_db": float(hf_ratio),
        "centroid_hz": centroid,
        "zcr": zcr,
    }


def _robust_z(values: np.ndarray, min_spread: float, z_clip: float) -> np.ndarray:
    median = np.median(values)
    spread = max(1.4826 * float(np.median(np.abs(values - median))), min_spread)
    return np.clip((values - median) / spread, -z_clip, z_clip)


def derive_va(
    features: Sequence[dict], emotions: Sequence[str | None], cfg: DerivedVAConfig | None = None
) -> list[tuple[float, float]]:
    """(valence, arousal) in [-1, 1] per clip, normalising the features over these clips.

    ``features[i]`` is :func:`clip_features` of clip ``i`` and ``emotions[i]`` its label
    (or None). The corpus is the whole list, so call it once with every clip.
    """
    cfg = cfg or DerivedVAConfig()
    if len(features) != len(emotions):
        raise ValueError("derive_va: features and emotions differ in length.")
    if not features:
        return []
    z = {k: _robust_z(np.array([f[k] for f in features], dtype=np.float64),
                      cfg.min_spread[k], cfg.z_clip) for k in FEATURES}
    out = []
    for i, emotion in enumerate(emotions):
        prior_v, prior_a = cfg.priors.get(emotion, (0.0, 0.0)) if emotion else (0.0, 0.0)
        acoustic_a = cfg.w_energy * z["energy_db"][i] + cfg.w_hf * z["hf_ratio_db"][i]
        a = ((1 - cfg.arousal_prior_weight) * math.tanh(cfg.arousal_gain * acoustic_a)
             + cfg.arousal_prior_weight * prior_a)
        acoustic_v = (cfg.w_centroid * z["centroid_hz"][i] + cfg.w_level * z["level_db"][i]
                      + cfg.w_zcr * z["zcr"][i])
        v = ((1 - cfg.valence_prior_weight) * math.tanh(cfg.valence_gain * acoustic_v)
             + cfg.valence_prior_weight * prior_v)
        out.append((round(float(np.clip(v, -1, 1)), 4), round(float(np.clip(a, -1, 1)), 4)))
    return out
