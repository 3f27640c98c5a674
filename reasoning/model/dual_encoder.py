"""The dual-encoder audio LLM.

Data flow for a batch (B clips, prompts of P tokens with A audio positions each)::

    waves (B, S) -> speech encoder  (B, Ts, Ds) -> projector -> (B, Ns, H)
                 -> paralinguistic  (B, Tp, Dp) -> projector -> (B, Np, H)
    fused audio (B, A, H), A = Ns + Np (sequence fusion) or Ns (feature fusion)
    prompt embeddings (B, P, H) with the A audio positions replaced by the fused audio
    -> LoRA LLM -> LM loss on the target text
                -> hidden states at the audio positions -> pooled (B, H) -> VA head (B, D)

D = 2 (valence, arousal) or 3 (and dominance: ``heads.dimensions``).

The model is assembled from parts that are already built (:mod:`reasoning.model.builders`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reasoning.model.cache import EncoderCache, encode_with_cache

IGNORE = -100
# Keys of forward()'s output that report the CCC of a VA dimension: measurements, not losses.
CCC_PREFIX = "ccc_"


def pool_frames(x: torch.Tensor, lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Average (B, T, D) frames into exactly ``num_tokens`` tokens per clip, over each clip's
    real frames only (adaptive average pooling that ignores padding). Returns (B, N, D)."""
    T = x.shape[1]
    L = lengths.clamp(min=1).to(x.device, torch.float32)[:, None]       # (B, 1)
    i = torch.arange(num_tokens, device=x.device, dtype=torch.float32)[None, :]
    start = torch.floor(i * L / num_tokens)                              # (B, N)
    end = torch.maximum(torch.ceil((i + 1) * L / num_tokens), start + 1)
    t = torch.arange(T, device=x.device, dtype=torch.float32)[None, None, :]
    w = ((t >= start[..., None]) & (t < end[..., None])).to(x.dtype)     # (B, N, T)
    return torch.bmm(w / w.sum(-1, keepdim=True), x)


class Projector(nn.Module):
    """Temporal pooling to the recipe's token budget, a layer norm, then a two-layer MLP into
    the LLM's embedding space: (B, T, D) -> (B, num_tokens, llm_hidden).

    The norm matters for a middle encoder layer (``model.speech.layer``): only the last one
    passes through the encoder's own final norm, and in the others the dimensions differ in
    scale by more than ten times (Whisper base, layer 3: standard deviations 0.07 to 1.05).
    """

    def __init__(self, in_dim: int, llm_hidden: int, num_tokens: int, hidden: int = 512):
        super().__init__()
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, llm_hidden))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(pool_frames(x.float(), lengths, self.num_tokens)))


class VAHead(nn.Module):
    """Valence and arousal (``n_out`` 2), or valence, arousal and dominance (``n_out`` 3),
    from hidden states pooled over the audio positions: linear while it trains, clamped to
    [-1, 1] when it predicts. (A tanh output, as this head had, can saturate in the first
    steps and pass back 1e-3 of the gradient there: on one EmoDB fold arousal stayed at
    0.999 for every clip through training, CCC 0.000.)

    The pooled state is layer-normed first: a real LLM's hidden states have norms from about
    40 (SmolLM2's last layer, after its final norm) to 2000 (its middle layers), so the head's
    first step size would depend on ``heads.va_layer``.
    """

    def __init__(self, hidden: int, pooling: str = "mean", n_out: int = 2):
        super().__init__()
        self.pooling = pooling
        self.query = nn.Linear(hidden, 1) if pooling == "attention" else None
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 256), nn.GELU(), nn.Linear(256, n_out))

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) hidden states and (B, T) bool mask -> (B, H)."""
        h = h.float()
        if self.query is None:
            m = mask[..., None].float()
            return (h * m).sum(1) / m.sum(1).clamp(min=1)
        scores = self.query(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.einsum("bt,bth->bh", torch.softmax(scores, -1), h)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.norm(pooled))
        return out if self.training else out.clamp(-1, 1)


def ccc(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Concordance correlation coefficient per column of (N, D) inputs -> (D,); ``weight``
    (N, 1) of 0 and 1 leaves rows out without indexing (no value is read, so a memory
    trace on fake tensors can follow it)."""
    w = torch.ones_like(pred[:, :1]) if weight is None else weight
    n = w.sum().clamp(min=1)
    pm, tm = (w * pred).sum(0) / n, (w * target).sum(0) / n
    cov = (w * (pred - pm) * (target - tm)).sum(0) / n
    var_p, var_t = (w * (pred - pm) ** 2).sum(0) / n, (w * (target - tm) ** 2).sum(0) / n
    return 2 * cov / (var_p + var_t + (pm - tm) ** 2 + 1e-8)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 - CCC."""
    return (1 - ccc(pred, target)).mean()


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded (B, T) ``mask``: real tokens count from 0, padding takes 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def packed_candidate_mask(prompt_mask: torch.Tensor, label_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The attention mask of a prompt followed by L candidates' fed tokens (C - 1 each, one
    candidate after another), as :meth:`DualEncoderLLM._score` packs them.

    ``prompt_mask`` (B, P) marks the real prompt tokens, ``label_mask`` (L, C) the real tokens
    of each candidate. A prompt position attends causally to the real prompt positions; a
    candidate's token to those and to the earlier real tokens of its own candidate, never to
    another candidate. Returns (B, 1, T, T), T = P + L * (C - 1), additive in ``dtype`` (0:
    attend, the dtype's minimum: not), what both the eager and the sdpa attention of
    transformers take as a 4D mask, unchanged. A padding position attends to itself, so that
    no row is masked whole (its output is never read).
    """
    (B, P), (L, C) = prompt_mask.shape, label_mask.shape
    device = prompt_mask.device
    owner = torch.cat([torch.full((P,), -1, device=device),
                       torch.arange(L, device=device).repeat_interleave(C - 1)])   # -1: the prompt
    t = torch.arange(len(owner), device=device)
    visible = (t[:, None] >= t[None, :]) & ((owner[None, :] == -1) | (owner[:, None] == owner[None, :]))
    real = torch.cat([prompt_mask.bool(), label_mask[:, :-1].bool().reshape(1, -1).expand(B, -1)], 1)
    allowed = (visible & real[:, None, :]) | torch.eye(len(owner), dtype=torch.bool, device=device)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


class DualEncoderLLM(nn.Module):
    """Whisper + paralinguistic encoders, projectors, a (LoRA) LLM and the heads.

    ``forward(batch)`` returns a dict of losses for the batch's task; ``score_labels``,
    ``predict_va`` and ``generate`` serve prediction.
    """

    def __init__(self, speech_encoder: nn.Module, paralinguistic_encoder: nn.Module | None,
                 projectors: nn.ModuleDict, llm: nn.Module, va_head: VAHead,
                 gender_head: nn.Module | None = None, audio_emotion_head: nn.Module | None = None,
                 fusion: str = "sequence",
                 fuse: nn.Module | None = None, va_layer: int = -1, va_loss: str = "ccc",
                 va_weight: float = 1.0, gender_weight: float = 0.0, audio_emotion_weight: float = 0.0,
                 emotion_loss: str = "lm",
                 va_in_emotion: bool = False, va_dimensions: tuple[str, ...] = ("valence", "arousal")):
        super().__init__()
        self.speech_encoder = speech_encoder
        self.paralinguistic_encoder = paralinguistic_encoder
        self.projectors = projectors
        self.fuse = fuse
        self.llm = llm
        self.va_head = va_head
        self.gender_head = gender_head
        self.audio_emotion_head = audio_emotion_head  # (H,) mean audio token -> label logits
        self.fusion = fusion
        self.va_layer = va_layer
        self.va_loss = va_loss
        self.va_weight = va_weight
        self.gender_weight = gender_weight
        self.audio_emotion_weight = audio_emotion_weight
        self.emotion_loss = emotion_loss
        self.va_in_emotion = va_in_emotion
        self.va_dimensions = tuple(va_dimensions)  # the columns of the VA head's output
        self.gather = None  # rows of every process, for the VA loss (reasoning.training.distributed.gather_rows)
        self.caches: dict[str, EncoderCache] = {}  # encoder name -> its output cache (frozen encoders)

    @property
    def num_audio_tokens(self) -> int:
        n = self.projectors["speech"].num_tokens
        if self.paralinguistic_encoder is not None and self.fusion == "sequence":
            n += self.projectors["paralinguistic"].num_tokens
        return n

    def part_of(self, name: str) -> str:
        """Which trainable part (speech, paralinguistic, llm, heads) a parameter belongs to."""
        for prefix, part in (("speech_encoder.", "speech"), ("projectors.speech.", "speech"),
                             ("paralinguistic_encoder.", "paralinguistic"),
                             ("projectors.paralinguistic.", "paralinguistic"), ("fuse.", "paralinguistic"),
                             ("llm.", "llm"), ("va_head.", "heads"), ("gender_head.", "heads"),
                             ("audio_emotion_head.", "heads")):
            if name.startswith(prefix):
                return part
        raise KeyError(name)

    # -- audio ----------------------------------------------------------------------
    def _encode(self, name: str, encoder: nn.Module, waves: torch.Tensor, wave_lengths: torch.Tensor,
                clips: list[dict] | None) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.caches.get(name)
        if cache is None or clips is None:
            return encoder(waves, wave_lengths)
        return encode_with_cache(encoder, cache, waves, wave_lengths, clips)

    def encode_audio(self, waves: torch.Tensor, wave_lengths: torch.Tensor,
                     clips: list[dict] | None = None) -> torch.Tensor:
        """(B, S) waves -> (B, A, H) audio embeddings in the LLM's dtype. With ``clips``
        (their audio/start/end), frozen encoders read and fill the encoder-output cache."""
        feats, lengths = self._encode("speech", self.speech_encoder, waves, wave_lengths, clips)
        audio = self.projectors["speech"](feats, lengths)
        if self.paralinguistic_encoder is not None:
            pfeats, plengths = self._encode("paralinguistic", self.paralinguistic_encoder, waves,
                                            wave_lengths, clips)
            para = self.projectors["paralinguistic"](pfeats, plengths)
            audio = torch.cat([audio, para], 1) if self.fusion == "sequence" \
                else self.fuse(torch.cat([audio, para], -1))
        return audio.to(self.llm.get_input_embeddings().weight.dtype)

    def embed_prompt(self, batch: dict, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings (B, P, H) with the audio placeholder positions replaced by
        ``audio`` (B, A, H), encoded from the batch's waves when not given."""
        emb = self.llm.get_input_embeddings()(batch["input_ids"])
        if audio is None:
            audio = self.encode_audio(batch["waves"], batch["wave_lengths"], batch.get("clips"))
        mask = batch["audio_mask"]
        emb = emb.masked_scatter(mask[..., None], audio.reshape(-1, audio.shape[-1]))
        return emb

    # -- losses ---------------------------------------------------------------------
    def _run(self, embeds: torch.Tensor, mask: torch.Tensor, **kw):
        positions = real_positions(mask)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kw)

    def _hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every layer's (B, P, H) hidden states of the prompt, from the LLM without its LM head
        (LoRA still inside): a pass that reads the states alone never computes a logit."""
        positions = real_positions(mask)
        decoder = self.llm.get_decoder()  # peft forwards the call to the wrapped causal LM
        return decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                       output_hidden_states=True, use_cache=False).hidden_states

    def lm_loss(self, batch: dict, prompt_embeds: torch.Tensor, want_hidden: bool = False):
        """Next-token loss on the target text (teacher forcing)."""
        tgt_emb = self.llm.get_input_embeddings()(batch["target_ids"])
        embeds = torch.cat([prompt_embeds, tgt_emb], 1)
        mask = torch.cat([batch["attention_mask"], batch["target_mask"]], 1)
        T = batch["target_ids"].shape[1]
        # Only the positions that predict a target token go through the LM head: the last
        # prompt position and all target positions but the last (P - 1 .. P + T - 2).
        out = self._run(embeds, mask, output_hidden_states=want_hidden, logits_to_keep=T + 1)
        logits = out.logits[:, :-1].float()  # position t predicts target token t
        labels = batch["target_ids"].masked_fill(~batch["target_mask"].bool(), IGNORE)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
        return loss, out

    def pooled_audio_state(self, hidden_states, audio_mask: torch.Tensor) -> torch.Tensor:
        """(B, H) state of the VA head's layer pooled over the audio positions (those of
        ``audio_mask`` (B, P): the prompt comes first in every pass)."""
        h = hidden_states[self.va_layer][:, : audio_mask.shape[1]]
        return self.va_head.pool(h, audio_mask)

    def _va_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The recipe's VA loss over the rows with every target (NaN marks a missing one).
        Zero, still joined to the graph, when there is none: every process of a
        distributed run then computes the same losses. ``gather`` (set by the training loop
        when it runs several processes) gathers the rows of every process first: CCC over a
        process's 4-8 clips is not the CCC of the batch."""
        return self._va_terms(pred, target)[0]

    def _va_terms(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`_va_loss`, the (D,) CCC of each dimension on the same rows, detached)."""
        if self.gather is not None:
            pred, target = self.gather(pred, fill=0.0), self.gather(target.to(pred.dtype))
        known = torch.isfinite(target).all(-1, keepdim=True)          # (N, 1)
        w = known.to(pred.dtype)
        target = torch.where(known, target, torch.zeros_like(target))
        loss = pred.sum() * 0
        per_dim = ccc(pred, target, w)
        if "ccc" in self.va_loss:
            loss = loss + (1 - per_dim).mean()
        if "mse" in self.va_loss:
            loss = loss + (w * (pred - target) ** 2).sum() / (w.sum() * pred.shape[1]).clamp(min=1)
        return loss * (w.sum() > 0), per_dim.detach()

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Losses of one single-task batch: ``{"loss": total, <component>: value, ...}``.

        The VA and gender heads read the hidden states of the batch's one LLM pass: in a
        ``va`` batch, and with ``va_in_emotion`` in an emotion batch too. Batches that train
        the VA head also report the CCC of each dimension (``ccc_valence``, ...; not a loss,
        not in the total) for the training log.
        """
        task = batch["task"]
        audio = self.encode_audio(batch["waves"], batch["wave_lengths"], batch.get("clips"))
        prompt = self.embed_prompt(batch, audio)
        mask = batch["audio_mask"]
        losses: dict[str, torch.Tensor] = {}
        want_va = task == "va" or (task == "emotion" and self.va_in_emotion)
        want_gender = self.gender_head is not None and self.gender_weight > 0 and task in ("emotion", "va")
        need_pooled = want_va or want_gender
        if task == "va":  # hidden states only: no LM head
            pooled = self.pooled_audio_state(self._hidden_states(prompt, batch["attention_mask"]), mask)
        elif task == "emotion" and self.emotion_loss in ("soft", "both"):
            loglik, pooled = self._score(batch, prompt, pooled=need_pooled)  # (B, L)
            if self.emotion_loss == "both":
                # The emotion target is the gold label's candidate (label + end of turn), so its
                # LM loss is that candidate's log-likelihood per token: no second pass.
                gold = batch["label_index"]
                losses["lm"] = -loglik.gather(1, gold[:, None]).sum() / batch["label_mask"][gold].sum()
            votes = batch["votes"].to(loglik.dtype)
            losses["kl"] = F.kl_div(torch.log_softmax(loglik, -1), votes, reduction="batchmean")
        else:
            losses["lm"], out = self.lm_loss(batch, prompt, want_hidden=need_pooled)
            pooled = self.pooled_audio_state(out.hidden_states, mask) if need_pooled else None
        total = sum(losses.values())
        if task == "emotion" and self.audio_emotion_head is not None and self.audio_emotion_weight > 0:
            logits = self.audio_emotion_head(audio.float().mean(1))
            losses["audio_emotion"] = F.cross_entropy(logits, batch["label_index"])
            total = total + self.audio_emotion_weight * losses["audio_emotion"]
        per_dim = None
        if want_va:
            losses["va"], per_dim = self._va_terms(self.va_head(pooled), batch["va"])
            total = total + self.va_weight * losses["va"]
        if want_gender:
            known = batch["gender"] >= 0
            logits = self.gender_head(pooled)
            losses["gender"] = F.cross_entropy(logits[known], batch["gender"][known]) if known.any() \
                else logits.sum() * 0  # as _va_loss: the same keys on every process
            total = total + self.gender_weight * losses["gender"]
        losses["loss"] = total
        if per_dim is not None:
            losses.update({f"{CCC_PREFIX}{d}": c for d, c in zip(self.va_dimensions, per_dim)})
        return losses

    # -- prediction -----------------------------------------------------------------
    def _score(self, batch: dict, prompt_embeds: torch.Tensor, pooled: bool = False):
        """(B, L) log-likelihoods of the candidate labels, and with ``pooled`` the (B, H)
        audio state of the prompt positions (else None); see :meth:`score_labels`."""
        mask = batch["attention_mask"]                             # (B, P), left-padded
        cand, cand_mask = batch["label_ids"], batch["label_mask"]  # (L, C), right-padded
        B, (L, C) = mask.shape[0], cand.shape
        # A candidate's last token is scored but never fed: its C - 1 first tokens follow the
        # prompt, the L candidates one after another: P + L * (C - 1) positions per clip.
        fed = cand[:, :-1].reshape(1, -1).expand(B, -1)
        embeds = torch.cat([prompt_embeds, self.llm.get_input_embeddings()(fed)], 1)
        # Every candidate takes the positions it would have alone, right after the real prompt tokens.
        real = mask.long().sum(-1, keepdim=True)
        positions = torch.cat([real_positions(mask),
                               real + torch.arange(C - 1, device=mask.device).repeat(L)], 1)
        # The LM head runs on the last prompt position (left padding: P - 1), which predicts
        # every candidate's first token, and on the fed candidate positions.
        out = self.llm(inputs_embeds=embeds, attention_mask=packed_candidate_mask(mask, cand_mask, embeds.dtype),
                       position_ids=positions, use_cache=False, output_hidden_states=pooled,
                       logits_to_keep=1 + L * (C - 1))
        logp = torch.log_softmax(out.logits.float(), -1)              # (B, 1 + L * (C - 1), V)
        first = logp[:, 0].gather(-1, cand[:, 0].expand(B, L))        # (B, L)
        rest = logp[:, 1:].view(B, L, C - 1, -1).gather(-1, cand[:, 1:].expand(B, L, C - 1)[..., None])
        lp = torch.cat([first[..., None], rest.squeeze(-1)], -1)      # (B, L, C)
        seq = (lp * cand_mask).sum(-1)
        state = self.pooled_audio_state(out.hidden_states, batch["audio_mask"]) if pooled else None
        return seq, state

    def score_labels(self, batch: dict, prompt_embeds: torch.Tensor | None = None, with_va: bool = False,
                     loglik: bool = False):
        """Log-probabilities (B, L) of each label of ``batch["label_ids"]`` given the clip.

        One pass per clip over its prompt followed by all L candidates (label tokens + end of
        turn), packed one after another: the attention mask (:func:`packed_candidate_mask`)
        lets each candidate see the prompt and its own earlier tokens only, so each is scored
        as if it followed the prompt alone. The sequence log-likelihoods are normalised over
        the label set, so ``exp`` of a row sums to 1.

        ``loglik`` returns the sequence log-likelihoods (B, L) before that normalisation.

        ``with_va`` also returns the VA head's (B, D) prediction from the prompt positions of
        that pass: every prompt puts the audio before the task's instruction, so under the
        causal mask the audio positions the head pools are those of the VA prompt.
        """
        if prompt_embeds is None:
            prompt_embeds = self.embed_prompt(batch)
        seq, pooled = self._score(batch, prompt_embeds, pooled=with_va)
        scores = seq if loglik else torch.log_softmax(seq, -1)
        return (scores, self.va_head(pooled)) if with_va else scores

    @torch.no_grad()
    def predict_va(self, batch: dict, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) valence, arousal (and dominance) in [-1, 1], in ``heads.dimensions`` order."""
        if prompt_embeds is None:
            prompt_embeds = self.embed_prompt(batch)
        hidden = self._hidden_states(prompt_embeds, batch["attention_mask"])
        return self.va_head(self.pooled_audio_state(hidden, batch["audio_mask"]))

    @torch.no_grad()
    def generate(self, batch: dict, eos_token_id: list[int], pad_token_id: int,
                 max_new_tokens: int = 64, prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding after the prompt; returns the new token ids (B, <= max_new_tokens)."""
        if prompt_embeds is None:
            prompt_embeds = self.embed_prompt(batch)
        return self.llm.generate(inputs_embeds=prompt_embeds, attention_mask=batch["attention_mask"],
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=eos_token_id, pad_token_id=pad_token_id)
