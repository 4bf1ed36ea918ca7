"""Container images for the real-node tests, built on this machine (no registry can be reached here).

    debian   mmdebstrap bookworm minbase + python3-venv, imported into podman
    torch    tests/images/cpu-torch.Containerfile: the stand-in for the CUDA PyTorch base image
    trainer  the repository's own Dockerfile, built with --build-arg BASE_IMAGE=<torch>
    init     tests/images/init-nslookup.Containerfile: the image of the operator's init container
    pause    a one-layer image of a static binary: the pod sandbox

Podman keeps its store under ~/.cache/llmlaunch/podman and every image is tagged by a hash of what it is
built from, so a second run on the same machine reuses what did not change. The sandbox's pitfalls (runc
not crun, cgroupfs, ulimits under the hard limit, overlay only where the kernel allows it) are those
measured in ../shared/reference/podman-pods.sh.

    python tests/images.py     builds all of them and prints the archive paths and timings as JSON
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LLMLAUNCH_CACHE", Path.home() / ".cache/llmlaunch"))
TORCH_VERSION = "2.13.0"  # the version scripts/setup.sh pins
# The build context of the Dockerfile: what .dockerignore lets through, for the image's content hash.
CONTEXT_DIRS = ("launcher", "trainer", "k8s", "ds_configs", "examples", "monitoring", "helm")
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")


def _content_hash(paths: list[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in sorted(paths):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


class Podman:
    """Debian's podman with its configuration and store outside /etc (CONTAINERS_CONF, ..._STORAGE_CONF)."""

    def __init__(self, root: Path = CACHE / "podman"):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        (root / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={hard}:{hard}", "nproc=4096:4096"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
        )
        driver = "overlay" if overlay_works(root) else "vfs"
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph-{driver}"\n'
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(root / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(root / "storage.conf"))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} ... failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def release(self) -> None:
        """Undo the self-bind mount podman's overlay driver puts on its store (it stays after podman exits):
        the host keeps no mount of ours once the images are saved."""
        for home in self.root.glob("graph-*/overlay"):
            # check=False: this runs in a finally, where a failed umount must not hide the build's own error
            if os.path.ismount(home) and subprocess.run(["umount", str(home)], check=False).returncode != 0:
                print(f"warning: could not unmount {home}; `umount {home}` by hand", file=sys.stderr)

    def exists(self, ref: str) -> bool:
        return self("image", "exists", ref, check=False).returncode == 0

    def build(self, ref: str, containerfile: Path, context: Path, build_args: dict[str, str], log: Path) -> None:
        """podman build with this host's pip set-up (config, certificates, local wheel folders) mounted,
        so RUN steps install from the same indexes the host's pip uses."""
        args = ["build", "--network", "host", "--layers", "-f", str(containerfile), "-t", ref]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for path in pip_mounts():
            args += ["-v", f"{path}:{path}:ro"]
        with log.open("w") as out:  # written as it goes: a build takes minutes
            code = subprocess.run(["podman", *args, str(context)], env=self.env, stdout=out,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise RuntimeError(f"building {ref} failed; the end of {log}:\n{log.read_text()[-4000:]}")

    def save(self, ref: str, archive: Path) -> Path:
        if not archive.is_file():
            tmp = archive.with_suffix(".partial")
            tmp.unlink(missing_ok=True)
            self("save", "--format", "docker-archive", "-o", str(tmp), ref)
            tmp.rename(archive)
        # Older builds of the same image (each a full copy: ~2 GB for the trainer) are never read again.
        stem = archive.name.rsplit("-", 1)[0]
        for old in archive.parent.glob(f"{stem}-*.tar"):
            if old != archive and old.name.rsplit("-", 1)[0] == stem:
                old.unlink(missing_ok=True)
        return archive


def overlay_works(root: Path) -> bool:
    """Whether overlayfs mounts here (not on an overlay root filesystem, for example)."""
    probe = Path(tempfile.mkdtemp(dir=root, prefix="overlay-probe-"))
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (probe / sub).mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work", str(probe / "merged")],
            capture_output=True).returncode == 0
        if mounted:
            subprocess.run(["umount", str(probe / "merged")], check=True)
        return mounted
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def pip_mounts() -> list[Path]:
    """The host's pip configuration, CA certificates and the local folders that configuration names."""
    found = [Path("/etc/ssl/certs")]
    configs = [Path("/etc/pip.conf"), Path.home() / ".config/pip/pip.conf", Path.home() / ".pip/pip.conf"]
    words = [v for k, v in os.environ.items() if k.startswith("PIP_")]
    for config in configs:
        if config.is_file():
            found.append(config)
            words += config.read_text().split()
    for word in words:
        for token in word.split():
            path = Path(token.removeprefix("file://"))
            if path.is_absolute() and path.exists():
                # a local "simple" index links to files beside it (../files/...): mount its parent
                found.append(path.parent if path.name == "simple" else path)
    return sorted({p for p in found if p.exists()})


def debian_image(podman: Podman, workdir: Path) -> str:
    packages = "python3,python3-venv,ca-certificates"
    ref = f"localhost/llmlaunch-test-debian:{hashlib.sha256(packages.encode()).hexdigest()[:12]}"
    if not podman.exists(ref):
        rootfs = workdir / "debian.tar"
        subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs)],
                       check=True, capture_output=True)
        podman("import", "--change", "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               str(rootfs), ref)
        rootfs.unlink()
    return ref


def torch_image(podman: Podman, workdir: Path) -> str:
    debian = debian_image(podman, workdir)
    containerfile = REPO / "tests" / "images" / "cpu-torch.Containerfile"
    ref = f"localhost/llmlaunch-test-torch:{_content_hash([containerfile], debian + TORCH_VERSION)}"
    if not podman.exists(ref):
        podman.build(ref, containerfile, containerfile.parent,
                     {"DEBIAN_IMAGE": debian, "TORCH_VERSION": TORCH_VERSION}, workdir / "torch-build.log")
    return ref


def trainer_image(podman: Podman, workdir: Path) -> str:
    """The repository's Dockerfile on the CPU torch base: what a user builds, but for the base."""
    base = torch_image(podman, workdir)
    files = [REPO / f for f in CONTEXT_FILES] + [p for d in CONTEXT_DIRS for p in (REPO / d).rglob("*")]
    ref = f"localhost/llmlaunch-trainer:test-{_content_hash(files, base)}"
    if not podman.exists(ref):
        podman.build(ref, REPO / "Dockerfile", REPO, {"BASE_IMAGE": base}, workdir / "trainer-build.log")
    return ref


def single_layer_archive(archive: Path, ref: str, files: dict[str, tuple[bytes, int]], links: dict[str, str],
                         entrypoint: list[str]) -> Path:
    """A docker-archive image of one layer, for images made of a static binary."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    layer_bytes = layer.getvalue()
    digest = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}"]}}).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": [ref],
                            "Layers": [f"{digest}/layer.tar"]}]).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in ((f"{config_id}.json", config), (f"{digest}/layer.tar", layer_bytes),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


PAUSE_C = (b"#include <signal.h>\n#include <stdlib.h>\n#include <unistd.h>\n"
           b"static void bye(int s) { exit(0); }\n"
           b"int main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }\n")


def pause_archive(workdir: Path, ref: str = "localhost/pause:3.2") -> Path:
    """The pod sandbox image: a static binary that waits for SIGTERM (what k8s.gcr.io/pause does)."""
    source, binary = workdir / "pause.c", workdir / "pause"
    source.write_bytes(PAUSE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(source)], check=True, capture_output=True)
    return single_layer_archive(workdir / "pause.tar", ref, {"pause": (binary.read_bytes(), 0o755)}, {}, ["/pause"])


def init_image(podman: Podman, workdir: Path) -> str:
    """The image of the operator's init container (`sh -c '... nslookup MASTER ...'`)."""
    debian = debian_image(podman, workdir)
    containerfile = REPO / "tests" / "images" / "init-nslookup.Containerfile"
    ref = f"localhost/llmlaunch-test-init:{_content_hash([containerfile], debian)}"
    if not podman.exists(ref):
        podman.build(ref, containerfile, containerfile.parent, {"DEBIAN_IMAGE": debian}, workdir / "init-build.log")
    return ref


def build_all(workdir: Path) -> dict[str, Path | str | float]:
    """Every image the node needs besides the pause image, as docker archives for `ctr images import`.
    One builder at a time (a lock): scripts/test.sh starts one in the background before the suite, and
    the `pods` tests wait for it here, then find its images."""
    (CACHE / "images").mkdir(parents=True, exist_ok=True)
    with (CACHE / "images" / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_all(workdir)


def _build_all(workdir: Path) -> dict[str, Path | str | float]:
    podman = Podman()
    try:
        return _build_and_save(podman, workdir)
    finally:
        podman.release()


def _build_and_save(podman: Podman, workdir: Path) -> dict[str, Path | str | float]:
    out = {}
    start = time.monotonic()
    out["trainer"], out["init"] = trainer_image(podman, workdir), init_image(podman, workdir)
    out["build_s"] = round(time.monotonic() - start, 1)
    start = time.monotonic()
    for key in ("trainer", "init"):
        out[f"{key}_archive"] = podman.save(out[key],
                                            CACHE / "images" / f"{out[key].split('/')[-1].replace(':', '-')}.tar")
    out["save_s"] = round(time.monotonic() - start, 1)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        out = build_all(Path(tmp))
        out["trainer_archive_mb"] = round(Path(out["trainer_archive"]).stat().st_size / 2**20)
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in out.items()}), flush=True)
        sys.exit(0)
