"""Multi-process training: which layers FSDP shards as one unit each.

accelerate's FSDP ``TRANSFORMER_BASED_WRAP`` policy (``recipes/accelerate/fsdp.yaml``) takes
the layer classes to wrap from the model's ``_no_split_modules`` when the config names
none, as transformers models declare them. :class:`~reasoning.model.dual_encoder.DualEncoderLLM` is
assembled from several models, so the training loop sets that attribute from
:func:`layer_classes`: one config then fits every recipe, whatever its encoders and LLM.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

# Names of the module lists that hold a transformer's repeated blocks (Whisper, WavLM,
# HuBERT, Qwen2, Llama...: `layers`; BERT-style encoders: `layer`).
LAYER_LISTS = ("layers", "layer")


def layer_classes(model: nn.Module) -> list[str]:
    """Class names of the blocks FSDP should make one unit each: the blocks the transformers
    parts declare (``_no_split_modules``) and the repeated blocks of every ``layers`` stack,
    kept only when present in ``model`` (accelerate rejects a class it cannot find).

    Only modules that are *called* may be units (FSDP gathers a unit's weights in its
    forward): whole layers are, while e.g. Whisper's convolutions, which the speech encoder
    uses directly, stay in the root unit.
    """
    present = {type(m).__name__ for m in model.modules()}
    names: set[str] = set()
    for name, module in model.named_modules():
        if module is not model:
            names.update(getattr(module, "_no_split_modules", None) or [])
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_LISTS:
            names.update(type(m).__name__ for m in module)
    return sorted(names & present)


class _GatherRows(torch.autograd.Function):
    """All-gather of equal-sized shards whose backward is one all-reduce: each process gets
    the sum over processes of the gradient on its own rows. torch's
    ``torch.distributed.nn.functional.all_gather`` computes the same, but on gloo (CPU) its
    backward is a loop of ``scatter`` calls, and in 4 of 86 two-process CPU runs of
    ``tests/ddp_ccc.py`` a process then aborted at exit ("terminate called without an active
    exception") after its work was done; without the gather 0 of 50 did, and with this
    function 0 of 60."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        shards = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(shards, x.contiguous())
        return torch.cat(shards)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()  # a fresh tensor: all_reduce writes in place
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    """(n, ...) rows of this process -> the rows of every process, concatenated, with the
    gradient flowing back to each process's own rows.

    For losses that are not a mean over rows (CCC): computed on the gathered rows, every
    process holds the loss of the whole global batch, and DDP's mean of the gradients is its
    gradient. Shards may differ by a row, so shorter ones are padded with ``fill`` (NaN: the
    VA loss drops rows whose targets are not finite).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    sizes = [torch.zeros((), dtype=torch.long) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(x.shape[0]))
    most = int(max(sizes))
    padded = torch.cat([x, x.new_full((most - x.shape[0], *x.shape[1:]), fill)]) if x.shape[0] < most else x
    return _GatherRows.apply(padded)
