"""Tasks: manifest rows become single-task batches for the model.

Each row yields one example per task it can serve (ASR, emotion, valence/arousal text,
rationale): a prompt with an ``<audio>`` placeholder and its target text. A seeded
schedule orders these into single-task batches per epoch, and the collator reads and cuts
the audio, tokenizes the prompts and pads everything into tensors (:mod:`.data`).
"""
