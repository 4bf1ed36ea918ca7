"""The job: a job file as a typed model (JobSpec = name + ClusterSpec + trainer TrainConfig), loading it with
`--set` overrides, every rule that spans sections, the names and labels of what a job creates, and the torchrun
command line and ports that pods and local runs share.

May import: launcher.errors and the trainer's config (trainer.config, trainer.yaml_io). Everything else in the
launcher builds on this package; it imports none of them.
"""
