"""Writer ``hf``: a local teacher LLM through transformers (a folder or a hub id)."""

from __future__ import annotations

import logging
from typing import Sequence

from reasoning.errors import UserError
from reasoning.rationales.base import RationaleRequest, WriterError, build_messages

log = logging.getLogger(__name__)


class HFWriter:
    """Generate rationales with ``AutoModelForCausalLM``.

    The first attempt decodes greedily; later attempts sample (``temperature``, top-p 0.95)
    from a seed fixed by the attempt number, so a run is reproducible and a retry can say
    something different. The prompt goes through the tokenizer's chat template when it has
    one, else as plain "system / user / answer" text.
    """

    name = "hf"
    concurrency = 1  # one model, one device: parallel calls would only queue

    def __init__(self, model: str, device: str = "cpu", max_new_tokens: int = 80,
                 temperature: float = 0.7, seed: int = 0, dtype: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from reasoning.model.builders import disk_only

        try:
            with disk_only(model):
                self.tokenizer = AutoTokenizer.from_pretrained(model)
                kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
                self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs).to(device).eval()
        except (OSError, ValueError) as err:
            raise UserError(f"--model {model}: cannot load a causal LM and tokenizer from it "
                            f"({err}). Give a local folder with config.json, weights and a "
                            "tokenizer, or a hub id that is in the local cache.") from err
        self.device, self.max_new_tokens = device, max_new_tokens
        self.temperature, self.seed = temperature, seed
        log.info("hf writer: %s on %s", model, device)

    def _prompt(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer: "

    def write(self, request: RationaleRequest, attempt: int, feedback: Sequence[str] = ()) -> str:
        """Generate one answer (raw text; the caller normalises and verifies it)."""
        import torch

        prompt = self._prompt(build_messages(request, feedback))
        enc = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        gen = {"max_new_tokens": self.max_new_tokens, "pad_token_id": pad}
        if attempt > 0:
            torch.manual_seed(self.seed + attempt)
            gen.update(do_sample=True, temperature=self.temperature, top_p=0.95)
        else:
            gen.update(do_sample=False)
        try:
            with torch.no_grad():
                out = self.model.generate(**enc, **gen)
        except (RuntimeError, ValueError, IndexError) as err:
            raise WriterError(f"generation failed: {err}") from err
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
