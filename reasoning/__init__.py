"""emoreason: fine-tune audio LLMs to recognise emotion in speech and explain it.

The packages, in data-flow order:

* ``prepare``: a corpus as released -> ``manifest.jsonl`` and a dataset card;
* ``evidence``: acoustic and lexical cues measured per utterance;
* ``rationales``: evidence-grounded explanations, each claim verified;
* ``tasks``: manifest rows -> prompts, targets and single-task batches on a seeded schedule;
* ``model``: the audio encoders, the dual-encoder LLM with its VA head, the builders, the
  encoder cache, the memory estimate and SSL layer selection;
* ``training``: the recipe, the training loop, checkpoints, multi-process helpers,
  augmentation, GRPO and its rewards;
* ``evaluation``: folds, metrics, baselines, the encoder probe, ``eval``, reports,
  ``benchmark`` and ``compare``;
* ``pretrained``: the packaged real Whisper and SmolLM2, as transformers folders.

At the top: ``explain`` (inference and verification), ``demo``, ``export``, ``quickstart``,
``cli`` (the ``emoreason`` command), and what every stage shares: ``audio``, ``manifest``,
``files``, ``errors``.
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes, on import (peft and transformers import it), warns on every CPU with AVX512-BF16
# that it could not fetch an optional faster 4-bit CPU kernel ("pip install kernels"), which
# it would download from the hub. 4-bit works without it, so a user has nothing to do: the
# hint is dropped at its logger. Where `kernels` is installed (transformers 5.25 requires it),
# bitsandbytes asks it for that kernel, and offline it first warns that it skips the kernel's
# publisher check: dropped too, for that kernel only.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "gemm_4bit_forward" not in record.getMessage())
_logging.getLogger("kernels._internals.hf_hub").addFilter(
    lambda record: "kernels-community/quantization-bitsandbytes" not in record.getMessage())
