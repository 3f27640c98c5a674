"""The encoder-output cache: a frozen encoder's output for each clip, computed once.

A frozen encoder gives the same output for a clip in every epoch and every task, so
training stores it on disk the first time and reads it back afterwards. Layout::

    <model.encoder_cache>/<encoder key>/<clip key>.npy      (frames, dim) float32

* The *encoder key* hashes everything the output depends on: the model's path and config,
  the layer, the mel policy, the clip-length limit, the dtype and this module's version.
  Changing any of them starts a new folder, so stale outputs are never read.
* The *clip key* hashes the audio path, start, end, and the file's size and modification
  time, so an edited file is encoded again.
* Each clip is encoded on its own (a batch of one), so what is stored does not depend on
  which clips shared its batch.
* Files are written to a temporary name and renamed into place, and read memory-mapped.

Only encoders without trainable parameters are cached: an SSL model read through learned
layer weights (``layer: weighted``) is not, since its output changes as they train.

:class:`LRUCache` is the one in-memory cache of the project (decoded clips, openSMILE
descriptors): bounded in bytes, it drops the least recently used arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from reasoning.files import atomic_file, file_stamp

# Bumped whenever an encoder's output for the same clip and settings changes: 2 since Whisper's
# trim policy gives each clip zeros past its end (60624da).
CACHE_VERSION = 2


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def encoder_key(name: str, config: dict, **settings) -> str:
    """A folder name for one encoder with one set of settings."""
    return _digest({"name": name, "config": config, "settings": settings, "version": CACHE_VERSION})


def clip_key(clip: dict) -> str:
    """A file name for one clip (audio path, start, end, size and modification time)."""
    return _digest([str(Path(clip["audio"]).resolve()), clip.get("start"), clip.get("end"),
                    *file_stamp(clip["audio"])])


class LRUCache:
    """Arrays in memory up to ``max_bytes`` in all: past it, the least recently used are
    dropped (an array larger than the whole limit is never kept). ``max_bytes`` 0 keeps
    nothing. ``hits``, ``misses`` and ``evictions`` count what happened, for tests and logs."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self._items: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key):
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key, value: np.ndarray) -> None:
        if key in self._items or value.nbytes > self.max_bytes:
            return
        self._items[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1


class EncoderCache:
    """Per-clip outputs of one frozen encoder under ``root/key``."""

    def __init__(self, root: str | Path, key: str):
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def get(self, clip: dict) -> torch.Tensor | None:
        path = self.dir / f"{clip_key(clip)}.npy"
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return torch.from_numpy(np.array(np.load(path, mmap_mode="r")))

    def put(self, clip: dict, features: torch.Tensor) -> None:
        with atomic_file(self.dir / f"{clip_key(clip)}.npy", "wb") as f:
            np.save(f, features.detach().float().cpu().numpy())


def encode_with_cache(encoder, cache: EncoderCache, waves: torch.Tensor, lengths: torch.Tensor,
                      clips: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder(waves, lengths)`` with each clip's output read from ``cache`` when present,
    else computed alone and stored. Returns (B, T, D) features and (B,) frame counts."""
    feats = []
    for i, clip in enumerate(clips):
        x = cache.get(clip)
        if x is None:
            with torch.no_grad():
                out, n = encoder(waves[i:i + 1, : int(lengths[i])], lengths[i:i + 1])
            x = out[0, : int(n[0])]
            cache.put(clip, x)
        feats.append(x.to(waves.device))
    counts = torch.tensor([len(f) for f in feats], device=waves.device)
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), counts
