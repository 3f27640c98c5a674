"""Audio encoders: each maps a batch of waveforms to frame features and their lengths.

Every encoder takes ``waves`` (B, S) float32 at 16 kHz, zero-padded on the right, and
``wave_lengths`` (B,) in samples, and returns ``(features (B, T, D), lengths (B,))`` where
frames at or beyond ``lengths[b]`` are padding. Encoders are built from modules that are
already constructed (see :mod:`reasoning.model.builders`); none reads files.
"""

from __future__ import annotations

import hashlib
import logging
import warnings

import numpy as np
import torch
from torch import nn
from transformers import WhisperFeatureExtractor

from reasoning.audio import SAMPLE_RATE
from reasoning.model.cache import LRUCache

log = logging.getLogger(__name__)

WHISPER_HOP = 160            # samples per mel frame (10 ms)
WHISPER_WINDOW_FRAMES = 3000  # 30 s of mel frames
WHISPER_WINDOW_SAMPLES = WHISPER_WINDOW_FRAMES * WHISPER_HOP
WHISPER_N_FFT = 400          # STFT window (25 ms)


def log_mel(waves: torch.Tensor, filters: torch.Tensor, n_fft: int = WHISPER_N_FFT,
            hop: int = WHISPER_HOP) -> torch.Tensor:
    """Whisper's log-mel spectrogram of zero-padded ``waves`` (B, S), computed on their own
    device, as transformers' ``WhisperFeatureExtractor`` computes it on the CPU: a
    Hann-windowed STFT, power, ``filters`` (n_fft // 2 + 1, n_mels), log10 floored at 8 below
    each clip's peak, then scaled. Returns (B, n_mels, S // hop) float32.

    Autocast is off: a bfloat16 filter product moves the features by about 1e-2.
    """
    with torch.autocast(waves.device.type, enabled=False):
        window = torch.hann_window(n_fft, device=waves.device)
        stft = torch.stft(waves.float(), n_fft, hop, window=window, return_complex=True)
        power = stft[..., :-1].abs() ** 2  # the last frame is past the end, as in Whisper
        spec = filters.to(waves.device, torch.float32).T @ power
        spec = spec.clamp(min=1e-10).log10()
        spec = torch.maximum(spec, spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (spec + 4.0) / 4.0


class WhisperSpeechEncoder(nn.Module):
    """Whisper's encoder with an explicit mel-length policy.

    Whisper was pre-trained on 30 s windows, and transformers' ``WhisperEncoder.forward``
    insists on 3000 mel frames, so a 2 s clip would cost a full 30 s forward. Policy
    ``trim`` (the default) runs the encoder's own layers on the batch's longest clip only:
    the convolutions see the real frames and zeros after them, the positional embeddings are
    sliced to that length, and attention is masked past each clip's end, so a clip's
    output is the same alone and in any batch. ``pad30`` pads every clip to
    30 s, exactly as in pre-training, for comparison.

    ``layer`` picks the hidden layer that is returned (-1: the final output). The layers
    above it are never run: for emotion, a middle layer of Whisper carries more of how
    something was said than the last one, which is tuned to the words.
    """

    def __init__(self, encoder: nn.Module, feature_extractor: WhisperFeatureExtractor,
                 mel_policy: str = "trim", layer: int = -1):
        super().__init__()
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.mel_policy = mel_policy
        self.layer = layer
        self.hidden_size = encoder.config.d_model

    def mel(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features (B, n_mels, F) and valid frame counts (B,), computed on the
        device of ``waves`` (the training GPU: no copy to the CPU and back)."""
        longest = int(wave_lengths.max())
        # trim: at least half an STFT window of zeros after every clip, so that its last frames
        # are computed from zeros whether it is alone or beside a longer clip.
        window = WHISPER_WINDOW_SAMPLES
        target = window if self.mel_policy == "pad30" else min(longest + WHISPER_N_FFT // 2, window)
        # Round up to an even number of frames so the stride-2 convolution sees whole pairs.
        target = -(-target // (2 * WHISPER_HOP)) * 2 * WHISPER_HOP
        lengths = wave_lengths.to(waves.device)
        real = torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]
        waves = nn.functional.pad(waves * real, (0, max(target - waves.shape[1], 0)))[:, :target]
        fe = self.feature_extractor
        feats = log_mel(waves, torch.from_numpy(fe.mel_filters), fe.n_fft, fe.hop_length)
        return feats, (lengths + WHISPER_HOP - 1) // WHISPER_HOP

    def hidden_states(self, waves: torch.Tensor, wave_lengths: torch.Tensor,
                      upto: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every hidden layer, numbered as transformers does (0 = the convolutions plus
        positions, i = the output of layer i, the last one after the final layer norm), each
        (B, T, D), and the valid frame counts (B,). ``upto``: stop after that layer.

        A clip longer than Whisper's 30 s window is encoded in 30 s windows (the last one
        shorter), each as a clip of its own, and their frames are joined in order.
        """
        if waves.shape[-1] > WHISPER_WINDOW_SAMPLES:  # the shape, not the lengths: no value is read (memory traces)
            return self._windowed(waves, wave_lengths, upto)
        enc = self.encoder
        n = len(enc.layers)
        upto = n if upto is None else upto
        feats, frames = self.mel(waves, wave_lengths)
        feats = feats.to(device=enc.conv1.weight.device, dtype=enc.conv1.weight.dtype)
        if self.mel_policy == "trim":
            # The convolutions see zeros past each clip's end, as they do for a clip alone (their
            # own zero padding), so what a clip gets does not depend on the clips beside it.
            real = (torch.arange(feats.shape[-1], device=feats.device)[None, :] < frames[:, None].to(feats.device))
            real = real[:, None, :].to(feats.dtype)                # (B, 1, F)
            x = nn.functional.gelu(enc.conv1(feats * real)) * real
        else:
            x = nn.functional.gelu(enc.conv1(feats))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # (B, T, D)
        T = x.shape[1]
        x = x + enc.embed_positions.weight[:T]
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        lengths = torch.clamp((frames + 1) // 2, max=T).to(x.device)
        # Additive mask (B, 1, T, T): no clip attends to the padding after its end.
        pad = torch.arange(T, device=x.device)[None, :] >= lengths[:, None]
        mask = torch.zeros(x.shape[0], 1, T, T, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(pad[:, None, None, :], torch.finfo(x.dtype).min)
        states = [x]
        for layer in enc.layers[:upto]:
            x = layer(x, mask)
            x = x[0] if isinstance(x, tuple) else x
            states.append(x)
        if upto == n:
            states[-1] = enc.layer_norm(x)
        return states, lengths

    def _windowed(self, waves: torch.Tensor, wave_lengths: torch.Tensor,
                  upto: int | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        window = WHISPER_WINDOW_SAMPLES
        pieces, owner = [], []
        for b, n in enumerate(wave_lengths.tolist()):
            for start in range(0, max(n, 1), window):
                pieces.append(waves[b, start:min(start + window, n)])
                owner.append(b)
        states, lengths = self.hidden_states(nn.utils.rnn.pad_sequence(pieces, batch_first=True),
                                             torch.tensor([len(p) for p in pieces]), upto)
        joined = [nn.utils.rnn.pad_sequence(
            [torch.cat([h[i, : lengths[i]] for i in range(len(pieces)) if owner[i] == b])
             for b in range(len(wave_lengths))], batch_first=True) for h in states]
        total = torch.zeros(len(wave_lengths), dtype=lengths.dtype, device=lengths.device)
        total.index_add_(0, torch.tensor(owner, device=lengths.device), lengths)
        return joined, total

    def forward(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.encoder.layers)
        layer = self.layer % (n + 1)
        states, lengths = self.hidden_states(waves, wave_lengths, upto=layer)
        return states[-1], lengths


def wave_normalization(path: str | None) -> bool:
    """Whether the SSL model at ``path`` (hub id or folder) was pre-trained on waveforms
    z-normalised per clip: its feature extractor's ``do_normalize`` (wavlm-base-plus: no).
    A model built from a config (no ``path``), or a folder without a preprocessor config,
    takes the feature extractor's default, True."""
    from transformers import AutoFeatureExtractor

    from reasoning.pretrained import resolve_model_path

    if path is None:
        return True
    try:
        extractor = AutoFeatureExtractor.from_pretrained(resolve_model_path(path))
    except (OSError, ValueError):  # no preprocessor_config.json there
        log.info("%s has no feature extractor config: its waveforms are z-normalised per clip", path)
        return True
    return bool(extractor.do_normalize)


def masked_standardize(x: torch.Tensor, real: torch.Tensor, eps: float) -> torch.Tensor:
    """``x`` (..., T) with zero mean and unit variance over its last dimension, counting only
    the positions where ``real`` (broadcastable to ``x``, 0/1) is set; zero elsewhere."""
    n = real.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * real).sum(-1, keepdim=True) / n
    var = (((x - mean) * real) ** 2).sum(-1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * real


class MaskedGroupNorm(nn.Module):
    """The group norm of an SSL model's first convolution (``feat_extract_norm="group"``:
    one group per channel, statistics over time) taken over each clip's real frames only.

    ``nn.GroupNorm`` averages over the padding too, so a 1 s clip beside a 4 s one got other
    features than alone. The weights are the original module's (same state-dict keys).
    ``lengths`` (B,): real frames of the convolution's output, set by :class:`SSLEncoder`
    around each call; None: every frame is real, exactly as ``nn.GroupNorm``.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        if norm.num_groups != norm.num_channels or not norm.affine:
            raise ValueError("MaskedGroupNorm replaces a GroupNorm with one group per channel and weights")
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.lengths: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T), zero past each clip's real frames."""
        if self.lengths is None:
            return nn.functional.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
        real = (torch.arange(x.shape[-1], device=x.device)[None, :] < self.lengths.to(x.device)[:, None])
        real = real[:, None, :].float()                                  # (B, 1, T)
        h = masked_standardize(x.float(), real, self.eps) * self.weight.float()[:, None] + self.bias.float()[:, None]
        return (h * real).to(x.dtype)


class SSLEncoder(nn.Module):
    """A transformers speech SSL model (WavLM, HuBERT, wav2vec2) read at one hidden layer,
    or through learned softmax weights over all of them (``layer="weighted"``).

    A clip's features are the same alone and in any padded batch: the model gets the
    attention mask, and the group norm over time of a ``feat_extract_norm="group"`` model
    (wavlm-base-plus, HuBERT base) becomes a :class:`MaskedGroupNorm`. ``normalize``: z-normalise
    each clip's waveform first, as the model's feature extractor does when its
    ``do_normalize`` is set (:func:`wave_normalization`).
    """

    def __init__(self, model: nn.Module, layer: int | str = "weighted", normalize: bool = True):
        super().__init__()
        self.model = model
        self.layer = layer
        self.normalize = normalize
        self.hidden_size = model.config.hidden_size
        n_layers = model.config.num_hidden_layers + 1  # + the CNN feature projection
        self.layer_weights = nn.Parameter(torch.zeros(n_layers)) if layer == "weighted" else None
        self.group_norm = None
        if model.config.feat_extract_norm == "group":
            first = model.feature_extractor.conv_layers[0]
            norm = first.layer_norm  # already masked when a second encoder wraps the same model
            first.layer_norm = self.group_norm = norm if isinstance(norm, MaskedGroupNorm) else MaskedGroupNorm(norm)

    def hidden_states(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[tuple, torch.Tensor]:
        """Every hidden layer ((B, T, D) each; 0 = the CNN features) and the frame lengths (B,).
        An empty tuple when the model returns no hidden states."""
        mask = (torch.arange(waves.shape[1], device=waves.device)[None, :] < wave_lengths[:, None])
        if self.normalize:  # per-clip zero mean, unit variance over the real samples, as in pre-training
            waves = masked_standardize(waves, mask.to(waves.dtype), 1e-7)
        dtype = next(self.model.parameters()).dtype
        if self.group_norm is not None:
            # Real frames of the first convolution (no padding, so its frames past a clip's end
            # are the only ones that read the zeros after it). Set for this call only; the SSL
            # model is never gradient-checkpointed, so no backward recomputes it without them.
            conv = self.model.feature_extractor.conv_layers[0].conv
            self.group_norm.lengths = (wave_lengths - conv.kernel_size[0]) // conv.stride[0] + 1
        try:
            with warnings.catch_warnings():
                # transformers' WavLM hands torch's attention a bool padding mask beside its float
                # position bias, and torch warns on every padded batch; nothing for a user to do.
                warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)
                out = self.model(waves.to(dtype), attention_mask=mask.long(), output_hidden_states=True)
        finally:
            if self.group_norm is not None:
                self.group_norm.lengths = None
        hidden = tuple(getattr(out, "hidden_states", None) or ())
        frames = hidden[0].shape[1] if hidden else 0
        lengths = self.model._get_feat_extract_output_lengths(wave_lengths).clamp(max=frames)
        return hidden, lengths.to(waves.device)

    def forward(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.hidden_states(waves, wave_lengths)
        if self.layer_weights is None:
            x = hidden[self.layer]
        else:
            w = torch.softmax(self.layer_weights, 0).to(hidden[0].dtype)
            x = sum(wi * h for wi, h in zip(w, hidden))
        return x, lengths.to(x.device)


class OpenSmileEncoder(nn.Module):
    """Frame-level eGeMAPS low-level descriptors (25 per 10 ms: pitch, loudness, jitter,
    shimmer, HNR, formants, spectral slope...) through a small trainable encoder.

    Needs no pretrained weights. The descriptors are computed by openSMILE on the CPU; the
    input batch norm learns their very different scales.
    """

    def __init__(self, hidden_size: int = 128, cache_mb: float = 256.0):
        super().__init__()
        import opensmile  # imported here: it loads a native library

        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                     feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        n_features = len(self.smile.feature_names)
        self._cache = LRUCache(int(cache_mb * 2**20))
        self.hidden_size = hidden_size
        self.norm = nn.BatchNorm1d(n_features)
        self.net = nn.Sequential(
            nn.Conv1d(n_features, hidden_size, kernel_size=5, padding=2), nn.GELU(),
            nn.Conv1d(hidden_size, hidden_size, kernel_size=5, padding=2), nn.GELU(),
        )

    def descriptors(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 25) low-level descriptors of one clip.

        They depend on the samples alone, so they are computed once per distinct clip and
        kept in memory (about 10 kB per second of audio, up to ``cache_mb``), keyed by a
        hash of the samples.
        """
        key = self._key(wave)
        lld = self._cache.get(key)
        if lld is None:
            lld = np.nan_to_num(self.smile.process_signal(wave, SAMPLE_RATE).to_numpy(dtype=np.float32))
            self._cache.put(key, lld)
        return lld

    def remember(self, wave: np.ndarray, lld: np.ndarray) -> None:
        """Keep descriptors computed elsewhere (in a DataLoader worker, by a copy of this
        encoder) for ``wave``, so that the training step finds them instead of computing them."""
        self._cache.put(self._key(wave), lld)

    @staticmethod
    def _key(wave: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(wave, dtype=np.float32).tobytes(), digest_size=16).digest()

    def forward(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        llds = [torch.from_numpy(self.descriptors(w[: int(n)].cpu().numpy()))
                for w, n in zip(waves, wave_lengths)]
        lengths = torch.as_tensor([max(len(x), 1) for x in llds], device=waves.device)
        x = nn.utils.rnn.pad_sequence(llds, batch_first=True).to(waves.device)  # (B, T, 25)
        if x.shape[1] == 0:
            x = x.new_zeros(x.shape[0], 1, x.shape[2])
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
        normed = torch.zeros_like(x)
        normed[valid] = self.norm(x[valid])  # statistics over real frames only, not padding
        x = self.net(normed.transpose(1, 2)) * valid[:, None, :]
        return x.transpose(1, 2), lengths
