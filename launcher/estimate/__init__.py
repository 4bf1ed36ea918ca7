"""The memory plan (`llmlaunch estimate`): per-GPU memory of a job by ZeRO stage and offload, from the model's
config alone (model_shape.py) and a table of common GPUs. No torch.

May import: launcher.errors, trainer.config, trainer.storage (the Hugging Face cache, to read a config).
"""
