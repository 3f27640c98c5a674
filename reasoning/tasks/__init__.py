"""Tasks: manifest rows become single-task batches for the model.

Each row yields one example per task it can serve (ASR, emotion, valence/arousal, rationale):
a prompt with an ``<audio>`` placeholder and its target text (:mod:`.prompts`). A seeded
schedule orders the examples into single-task batches per epoch and a DataLoader replays it
(:mod:`.schedule`); the collator reads and cuts the audio, tokenizes the prompts and pads
everything into tensors (:mod:`.collate`).
"""
