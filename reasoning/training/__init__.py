"""Training: the recipe, the supervised loop, its checkpoints, and GRPO refinement.

A YAML recipe is loaded into typed dataclasses (:mod:`.config`); the training recipe
(:mod:`.train`) builds the model and the task batches from it and trains under accelerate
(single process, DDP, FSDP: :mod:`.distributed`), with optional audio augmentation
(:mod:`.augment`), writing resumable checkpoints (:mod:`.checkpoint`). GRPO (:mod:`.grpo`)
then refines a trained checkpoint with the weighted rewards of :mod:`.rewards`.
"""
