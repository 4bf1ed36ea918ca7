"""Training: the loop (a Trainer whose train() only calls components), the model with its peft wrapping, the
DeepSpeed engine, the preflight checks before any process group starts, and the run log that feeds
observability.

May import every other trainer package; nothing but trainer.__main__ and the launcher's local runs imports it.
"""
