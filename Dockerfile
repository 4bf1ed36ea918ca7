# The trainer image: what every pod of an llmlaunch job runs (torchrun ... -m trainer --config ...).
#
#   docker build -t REGISTRY/llmlaunch-trainer:0.1.0 .        # or: podman build ...
#   docker push REGISTRY/llmlaunch-trainer:0.1.0
#   llmlaunch submit job.yaml --image REGISTRY/llmlaunch-trainer:0.1.0
#
# BASE_IMAGE: any image with Python >= 3.10, torch installed and `python` on the PATH. The default is the
# official CUDA PyTorch image of the torch version llmlaunch pins (H100/H200 need CUDA >= 12); its -devel
# flavour carries nvcc, which DeepSpeed needs to compile FusedAdam (at build time with
# DS_BUILD_FUSED_ADAM=1, else just in time in the pod). The tests build on a Debian base with CPU torch.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel
FROM ${BASE_IMAGE}

# The pods' securityContext defaults (cluster.security.run_as_user / run_as_group).
ARG UID=10001
ARG GID=10001
ARG DEEPSPEED_VERSION=0.19.8
# 1: compile DeepSpeed's FusedAdam now for TORCH_CUDA_ARCH_LIST (needs nvcc); 0: just in time, in the pod.
ARG DS_BUILD_FUSED_ADAM=0
ARG TORCH_CUDA_ARCH_LIST="9.0"

# The root filesystem is read-only in the pods: every cache points at /tmp, a writable emptyDir there
# (HOME too). PYTHONDONTWRITEBYTECODE: the .pyc files are compiled here, at install time.
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    HF_HOME=/tmp/.cache/huggingface \
    TORCH_EXTENSIONS_DIR=/tmp/.cache/torch_extensions \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    PIP_CACHE_DIR=/tmp/.cache/pip \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Dependencies first, read from pyproject.toml alone (no package is built), so that a change to the code
# rebuilds only the small layer below. DeepSpeed builds against the torch already in the image
# (no isolated build env), and nothing may replace that torch: the check fails the build if it did.
COPY pyproject.toml /tmp/llmlaunch-src/
RUN set -eux; \
    torch_before=$(python -c 'import torch; print(torch.__version__)'); \
    cd /tmp/llmlaunch-src; \
    DS_BUILD_FUSED_ADAM=${DS_BUILD_FUSED_ADAM} TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" \
      python -m pip install --no-cache-dir --no-build-isolation "deepspeed==${DEEPSPEED_VERSION}"; \
    python -m pip install --no-cache-dir $(python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(p["dependencies"] + p["optional-dependencies"]["trainer"] + p["optional-dependencies"]["tracking"]))'); \
    test "$(python -c 'import torch; print(torch.__version__)')" = "$torch_before"; \
    cd /; rm -rf /tmp/llmlaunch-src /tmp/.cache

COPY . /tmp/llmlaunch-src
RUN set -eux; \
    python -m pip install --no-cache-dir --no-deps /tmp/llmlaunch-src; \
    python -c 'import deepspeed, peft, transformers, trainer, launcher, mlflow, wandb, tensorboard'; \
    command -v torchrun; \
    rm -rf /tmp/llmlaunch-src /tmp/.cache; \
    echo "llmlaunch:x:${UID}:${GID}:llmlaunch trainer:/tmp:/usr/sbin/nologin" >> /etc/passwd; \
    echo "llmlaunch:x:${GID}:" >> /etc/group; \
    mkdir -p /workspace

USER ${UID}:${GID}
WORKDIR /workspace
CMD ["python", "-m", "trainer", "--help"]
