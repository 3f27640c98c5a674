"""The model: a speech encoder and a paralinguistic encoder, projectors, a LoRA LLM, a VA head.

The audio encoders (:mod:`.encoders`) turn waveforms into frame features; the dual-encoder
LLM (:mod:`.dual_encoder`) projects them into the LLM's embedding space at the prompt's audio
positions and adds the valence/arousal head. The builders (:mod:`.builders`) load the
pretrained parts and wrap LoRA; the encoder cache (:mod:`.cache`) keeps frozen encoders'
outputs; the memory estimate (:mod:`.memory`) sizes a recipe before anything is downloaded;
layer selection (:mod:`.saliency`) picks the SSL layer that carries the target.
"""
