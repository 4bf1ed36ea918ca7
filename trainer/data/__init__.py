"""Data: finding and reading sources (local, s3://, hf://), tokenizing them into shards on the volume by all
processes together, laying documents out in rows (packing or padding) and the resumable per-rank batches.

May import: trainer.config, trainer.storage, trainer.errors, trainer.failpoints. Never trainer.training,
trainer.checkpoints or trainer.observability: the loop consumes data, not the other way round.
"""
