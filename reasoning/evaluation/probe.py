"""Features of the encoder probe: every hidden layer of the frozen speech encoder, pooled.

The ``probe`` baseline (:func:`reasoning.evaluation.baselines.probe_baseline`) asks what the LLM adds
over its own speech encoder, as EmoBox does for encoders: a linear classifier on the
encoder's mean-pooled hidden states. This module computes those features::

    clip -> WhisperSpeechEncoder.hidden_states -> L x (1, T, D) -> mean over real frames
         -> (L, D) float32 per clip, L = encoder layers + 1 (0 = the convolutions)

* Each clip is encoded on its own (a batch of one), all layers in one pass. (Since the trim
  policy gives every clip zeros past its end, a batch would give the same features to float
  rounding; one at a time keeps the cache filling simple.)
* The pooled features are cached per clip with :class:`reasoning.model.cache.EncoderCache`
  (clip key: audio path, start, end, size and modification time), under an encoder key of
  the encoder's path, config, weight files, mel policy and clip-length limit.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from reasoning.model.cache import EncoderCache, encoder_key
from reasoning.training.checkpoint import resolve_device
from reasoning.tasks.collate import AudioCache, cut_clip
from reasoning.model.encoders import WhisperSpeechEncoder
from reasoning.errors import AudioError
from reasoning.pretrained import resolve_model_path

log = logging.getLogger(__name__)

POOLING = "mean-real-frames"  # part of the cache key: another pooling is another cache


def pool_layers(states: Sequence[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
    """Mean of every layer over each clip's real frames: ``L x (B, T, D)`` hidden states and
    ``(B,)`` valid frame counts -> ``(B, L, D)``. Frames at or past ``lengths[b]`` (padding)
    are never read."""
    h = torch.stack(list(states), 1).float()                                # (B, L, T, D)
    valid = torch.arange(h.shape[2], device=h.device)[None, :] < lengths[:, None].to(h.device)
    w = valid[:, None, :, None].to(h.dtype)                                 # (B, 1, T, 1)
    return (h * w).sum(2) / w.sum(2).clamp(min=1)


def _weights_stamp(path: str) -> list:
    """Name, size and modification time of a local model folder's files: a model rebuilt
    at the same path (a re-materialised random encoder) gets a new cache."""
    root = Path(path)
    if not root.is_dir():
        return []
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in root.iterdir()
                  if p.suffix in (".safetensors", ".bin"))


def probe_cache(encoder: WhisperSpeechEncoder, speech, root: str | Path) -> EncoderCache:
    """The cache of ``encoder``'s pooled layers under ``root``; ``speech`` is the
    ``model.speech`` config it was built from (path, mel policy, clip-length limit)."""
    path = os.path.abspath(resolve_model_path(speech.path))
    dtype = str(next(encoder.parameters()).dtype)
    key = encoder_key("probe", encoder.encoder.config.to_dict(), path=path,
                      weights=_weights_stamp(path), mel_policy=encoder.mel_policy,
                      max_seconds=speech.max_seconds, dtype=dtype, pooling=POOLING)
    return EncoderCache(root, key)


@torch.no_grad()
def encode_clip(encoder: WhisperSpeechEncoder, wave: np.ndarray) -> np.ndarray:
    """Pooled layers (L, D) of one clip, ``wave`` (S,) float32 at 16 kHz."""
    device = next(encoder.parameters()).device
    waves = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None].to(device)  # (1, S)
    states, lengths = encoder.hidden_states(waves, torch.tensor([waves.shape[1]], device=device))
    return pool_layers(states, lengths)[0].cpu().numpy()


def extract_probe_features(rows: Sequence[Mapping], encoder: WhisperSpeechEncoder,
                           cache: EncoderCache | None = None, max_seconds: float | None = None,
                           progress: bool | None = None
                           ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Pooled layers of every row: ``({id: (L, D) array}, {id: error message})``.

    A clip read from ``cache`` is not encoded again; a clip that cannot be read is reported
    in the second dict and the others go on. Clips longer than ``max_seconds`` (when set)
    are cut to their start, as in training (``model.speech.max_seconds``).
    """
    encoder.eval()
    audio = AudioCache(max_mb=0)
    feats: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    encoded = 0
    # disable=None: a bar on a terminal, none in logs and CI.
    for row in tqdm(rows, desc="probe encoder", unit="clip",
                    disable=True if progress is False else None):
        if not os.path.isfile(str(row["audio"])):
            failed[row["id"]] = f"{row['audio']}: no such audio file."
            continue
        hit = cache.get(row) if cache is not None else None
        if hit is not None:
            feats[row["id"]] = hit.numpy()
            continue
        try:
            feats[row["id"]] = encode_clip(encoder, cut_clip(audio(row), max_seconds, row["audio"]))
        except AudioError as err:
            failed[row["id"]] = str(err)
            continue
        encoded += 1
        if cache is not None:
            cache.put(row, torch.from_numpy(feats[row["id"]]))
    log.info("probe features: %d clips encoded, %d read from %s", encoded,
             len(feats) - encoded, cache.dir if cache is not None else "no cache")
    if failed:
        log.warning("probe: %d of %d clips could not be read, e.g. %s", len(failed), len(rows),
                    next(iter(failed.values())))
    return feats, failed


def load_probe_encoder(speech) -> WhisperSpeechEncoder:
    """The frozen Whisper encoder of a ``model.speech`` config, on the GPU when there is one."""
    from reasoning.model.builders import build_speech_encoder  # builders import the LLM stack

    encoder = build_speech_encoder(speech)
    encoder.requires_grad_(False)
    return encoder.to(resolve_device(None)).eval()
