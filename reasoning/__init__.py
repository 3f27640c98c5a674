"""emoreason: fine-tune audio LLMs to recognise emotion in speech and explain it."""

__version__ = "0.1.0"
