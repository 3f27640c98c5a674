"""emoreason: fine-tune audio LLMs to recognise emotion in speech and explain it."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes, on import (peft and transformers import it), warns on every CPU with AVX512-BF16
# that it could not fetch an optional faster 4-bit CPU kernel ("pip install kernels"), which
# it would download from the hub. 4-bit works without it, so a user has nothing to do: the
# hint is dropped at its logger.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "gemm_4bit_forward" not in record.getMessage())
