"""Checkpoints and export: saves that are complete or invisible (manifest with hashes), each rank's loop
state, resume (also at another world size), the object-store mirror, and a LoRA adapter merged for serving.

May import: trainer.config, trainer.storage, trainer.errors, trainer.failpoints.
"""
