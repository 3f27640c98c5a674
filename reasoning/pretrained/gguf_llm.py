"""A chat LLM from a GGUF file to an ordinary transformers folder.

transformers reads GGUF itself (``from_pretrained(dir, gguf_file=...)``, with the ``gguf``
package), de-quantising every tensor and undoing llama.cpp's q/k permutation, and it builds
the tokenizer and chat template from the file's metadata. A model loaded that way refuses
``save_pretrained``, so the weights are copied into a plain model built from the same config,
which saves and then reloads in seconds instead of a minute.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reasoning.errors import UserError


def convert_gguf(gguf_file: Path, out: Path) -> None:
    """Write ``out``: float32 safetensors, config, generation config and tokenizer (with its
    chat template) of the causal LM in ``gguf_file``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tokenizer.chat_template is None:
        raise UserError(f"{gguf_file}: the GGUF metadata has no chat template; emoreason needs an instruct model.")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path", "transformers_version")})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
