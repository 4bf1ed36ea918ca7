"""The click commands behind launcher/cli.py, one module per group, and the options and error handling they
share (options.py). Only launcher.cli imports this package; it may import every other launcher package.
"""
