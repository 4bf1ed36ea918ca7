"""The trainer's configuration: TrainConfig (train.yaml, the contract between the job file, the launcher and
the pods), its sections, the URL shapes it accepts and the DeepSpeed config built from it.

May import: trainer.errors, trainer.yaml_io, trainer.storage. Imported by everything else, the launcher too,
so no torch here.
"""
