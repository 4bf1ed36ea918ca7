"""A real `mlflow server` for tests: 127.0.0.1, a free port, a sqlite backend, artifacts proxied by the server
into a local directory (so the client uploads over HTTP, as a pod would), stopped by PID.

    server = MlflowServer.start(tmp_path)      # returns once /health answers (~20 s: sqlite migrations)
    MlflowClient(server.uri).search_runs(...)
    server.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from launcher.local.ports import free_port


@dataclass
class MlflowServer:
    uri: str
    pid: int  # the `mlflow server` process, leader of its own process group (its uvicorn worker is in it)
    log: Path

    @classmethod
    def start(cls, directory: Path, timeout: float = 120) -> MlflowServer:
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        log = directory / "mlflow-server.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
                 "--artifacts-destination", str(directory / "artifacts")],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                # no job runner (eight huey consumer processes on a shared 2-core machine); runs need none
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )
        server = cls(f"http://127.0.0.1:{port}", proc.pid, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return server
            except OSError:
                time.sleep(0.5)
        server.stop()
        raise AssertionError(f"mlflow server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server's process group (the PID recorded at start) and wait until it is gone."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    break
            except ChildProcessError:
                break
            time.sleep(0.1)
        else:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        with contextlib.suppress(ProcessLookupError):  # the uvicorn worker, if it outlived its parent
            os.killpg(self.pid, signal.SIGKILL)
