"""Multi-process training: which layers FSDP shards as one unit each.

accelerate's FSDP ``TRANSFORMER_BASED_WRAP`` policy (``recipes/accelerate/fsdp.yaml``) takes
the layer classes to wrap from the model's ``_no_split_modules`` when the config names
none, as transformers models declare them. :class:`~reasoning.model.DualEncoderLLM` is
assembled from several models, so the training loop sets that attribute from
:func:`layer_classes`: one config then fits every recipe, whatever its encoders and LLM.
"""

from __future__ import annotations

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
