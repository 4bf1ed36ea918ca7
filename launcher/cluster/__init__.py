"""The cluster client: the Kubernetes API through the `kubernetes` client (client.py), and the job operations
built on it: submit, wait, list, delete (jobs.py), and what status explains (job state, pods, training progress).

May import: launcher.spec (names), launcher.render (owner references), launcher.errors, trainer.yaml_io.
Never the job models at import time: status, list, logs and delete start without them.
"""
