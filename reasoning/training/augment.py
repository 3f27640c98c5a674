"""Audio augmentation of training examples, through audiomentations.

The recipe's ``augment`` section turns on any of: speed change (tempo and pitch together,
by resampling, as in Kaldi's speed perturbation), tempo change with the pitch kept (time
stretch), pitch shift with the tempo kept, Gaussian noise at a signal-to-noise ratio, and
gain. Each transform is applied to an example with probability ``augment.p``, its amount
drawn uniformly from the recipe's range. arXiv 2510.12819 (valence and arousal of pet
vocalisations) trained with time stretch and pitch shift.

Draws are seeded per example by ``(seed, epoch, utterance id)`` only, so a run, a resumed
run and every process of a multi-process run augment a clip identically, whatever the
batch order. The training collator calls the augmenter only for training batches and
never when encoder outputs come from a cache (see :class:`reasoning.tasks.collate.Collator`).
"""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager

import numpy as np

from reasoning.audio import SAMPLE_RATE
from reasoning.training.config import AugmentConfig


@contextmanager
def _seeded(seed: int):
    """audiomentations draws from the global ``random`` and ``numpy.random`` generators:
    seed both for one example, and give the caller's state back afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def build_transforms(cfg: AugmentConfig):
    """The audiomentations chain of ``cfg`` (None when augmentation is off)."""
    import audiomentations as am

    steps = cfg.transforms()
    if cfg.p <= 0 or not steps:
        return None
    chain = []
    if "speed" in steps:
        low, high = steps["speed"]
        # Resampling to rate r and playing at SAMPLE_RATE speeds the clip up by SAMPLE_RATE / r.
        chain.append(am.Resample(min_sample_rate=round(SAMPLE_RATE / high),
                                 max_sample_rate=round(SAMPLE_RATE / low), p=cfg.p))
    if "tempo" in steps:
        chain.append(am.TimeStretch(min_rate=steps["tempo"][0], max_rate=steps["tempo"][1],
                                    leave_length_unchanged=False, p=cfg.p))
    if "pitch" in steps:
        chain.append(am.PitchShift(min_semitones=steps["pitch"][0], max_semitones=steps["pitch"][1], p=cfg.p))
    if "snr_db" in steps:
        chain.append(am.AddGaussianSNR(min_snr_db=steps["snr_db"][0], max_snr_db=steps["snr_db"][1], p=cfg.p))
    if "gain_db" in steps:
        chain.append(am.Gain(min_gain_db=steps["gain_db"][0], max_gain_db=steps["gain_db"][1], p=cfg.p))
    return am.Compose(chain, p=1.0)


class Augmenter:
    """``augmenter(wave, key) -> wave``: one training example's augmented copy.

    ``wave`` is mono float32 at 16 kHz and is never modified in place (the audio cache
    keeps the clean clip). ``key`` names the draw (``"<epoch>:<utterance id>"``); the same
    seed and key always give the same output. Speed and tempo changes change the length.
    """

    def __init__(self, cfg: AugmentConfig, seed: int = 0):
        self.transforms = build_transforms(cfg)
        self.seed = seed if cfg.seed is None else cfg.seed
        if self.transforms is None:
            raise ValueError("augmentation is off in this recipe (augment.p is 0 or no transform is set)")

    def __call__(self, wave: np.ndarray, key: str) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        with _seeded(int.from_bytes(digest[:8], "little")):
            out = self.transforms(samples=np.array(wave, dtype=np.float32, copy=True), sample_rate=SAMPLE_RATE)
        return np.nan_to_num(np.asarray(out, dtype=np.float32))


def build_augmenter(cfg: AugmentConfig, seed: int = 0) -> Augmenter | None:
    """An :class:`Augmenter` for a recipe's ``augment`` section, or None when it is off."""
    return Augmenter(cfg, seed) if cfg.p > 0 and cfg.transforms() else None
