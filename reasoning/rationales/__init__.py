"""The rationale stage: evidence-grounded explanations, each claim verified.

``emoreason rationales --manifest M --writer template|hf|openai`` (or
:func:`write_rationales`) writes each row's ``rationale`` field::

    rationale = {
      "text": "anger: a loud voice, raised pitch and fast speech.",  # "label: cues" form
      "writer": "template" | "hf" | "openai",      # who wrote the text kept
      "requested_writer": the writer asked for,   # differs when it fell back
      "fallback": bool,                            # the template replaced a failing writer
      "verdict": "pass" | "fail",                  # every claim supported? (verify.verdict_fields)
      "attempts": tries of the requested writer,
      "claims": [{"kind": "emotion" | "cue" | "quote", "text", "supported", "reason",
                  "cue", "direction", "strength", "negated"}],   # cue claims
      "problems": [why claims failed],
      "errors": [writer errors, e.g. an endpoint that timed out],
    }

Writers (:mod:`~reasoning.rationales.template`, :mod:`~reasoning.rationales.hf`,
:mod:`~reasoning.rationales.openai_chat`) share the interface of
:class:`~reasoning.rationales.base.Writer` and are given the gold label, the transcript and
the evidence. The verifier is :mod:`reasoning.rationales.verify`; its thresholds are in
:mod:`reasoning.rationales.cues`.
"""

from reasoning.rationales.base import RationaleRequest, Writer, WriterError
from reasoning.rationales.template import TemplateWriter, template_rationale
from reasoning.rationales.verify import Verdict, extract_claims, verify
from reasoning.rationales.write import make_writer, rationale_for, summarize, write_rationales

__all__ = ["RationaleRequest", "TemplateWriter", "Verdict", "Writer", "WriterError",
           "extract_claims", "make_writer", "rationale_for", "summarize", "template_rationale",
           "verify", "write_rationales"]
