"""Real remote stores on this machine for the remote-source tests: an S3 server on loopback (moto's
server mode, in a subprocess stopped by its PID) and a Hugging Face hub cache written in the documented
layout (blobs/, snapshots/<commit>/ links, refs/main), read with HF_HUB_OFFLINE=1: no network."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def s3_env(endpoint: str, tmp: Path) -> dict[str, str]:
    """What a pod gets through cluster.secrets / cluster.env; no ~/.aws file of this machine is read."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "llmlaunch-test",
            "AWS_SECRET_ACCESS_KEY": "llmlaunch-test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (no server left behind)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def moto_server(tmp: Path, timeout: float = 60):
    """`python -m moto.server` on 127.0.0.1 (a free port it picks); yields its endpoint URL."""
    log_path = tmp / "moto.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    (tmp / "moto.pid").write_text(str(proc.pid))
    try:
        deadline = time.monotonic() + timeout
        while not (m := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_path.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield m.group(1)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def s3(endpoint: str, tmp: Path):
    """An s3fs filesystem talking to the test server (for the tests' own uploads and checks)."""
    import s3fs

    env = s3_env(endpoint, tmp)
    return s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"], endpoint_url=endpoint,
                             skip_instance_cache=True, use_listings_cache=False)


def add_to_hub_cache(cache: Path, repo_type: str, repo_id: str, files: dict[str, bytes]) -> str:
    """Write a repository into an HF cache as huggingface_hub does; returns the commit main points at."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(b"".join(name.encode() + b"\0" + data for name, data in sorted(files.items()))).hexdigest()
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return commit


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
