"""Local runs (`llmlaunch train`): the same trainer entrypoint the pods run, started by torchrun here, one
agent per local node, watched and restarted like pods.

May import: launcher.spec, launcher.errors, trainer.config and trainer.training (its preflight).
"""
