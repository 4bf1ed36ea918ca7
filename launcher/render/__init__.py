"""Rendering: a JobSpec becomes Kubernetes objects (the Jinja templates in k8s/) or the Helm chart's values,
plus the chart's generated files. Pure functions of the spec: nothing here talks to a cluster.

May import: launcher.spec, launcher.errors, trainer.config, trainer.yaml_io. Never launcher.cluster.
"""
