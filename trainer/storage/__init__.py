"""Files and caches every subsystem shares: writes a killed process never leaves half done, the Hugging Face
cache as plain files, and object storage (s3://) through fsspec.

May import: trainer.errors only.
"""
