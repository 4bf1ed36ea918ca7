#!/usr/bin/env bash
# Fallback when no prebuilt Kubernetes binaries are at hand: build v1.20.2 components from Debian
# bookworm's own `kubernetes` source package (~290 s and ~1.3 GB RAM for the first, ~1-2 min for each
# further one from the same tree; the 1.9 GB build tree is removed afterwards).
# Usage: build-kube-apiserver.sh WORKDIR OUTDIR [TARGET...]   (TARGET: kube-apiserver (default), kubelet,
#        kube-scheduler, kube-controller-manager)
set -euo pipefail
W=${1:?workdir}; OUT=${2:?outdir}; shift 2
TARGETS=("${@:-kube-apiserver}")
mkdir -p "$W" "$OUT"
if ! ls /etc/apt/sources.list.d/debian-src.sources >/dev/null 2>&1; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/debian-src.sources
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev >/dev/null
cd "$W"
apt-get source -q kubernetes >/dev/null 2>&1
cd kubernetes-*/
# The vendored modern-go/reflect2 v1.0.1 crashes this apiserver on the first CRD request when built
# with Go >= 1.18; Debian's reflect2 1.0.2 fixes it.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/go.mod
mkdir -p .go/src/k8s.io; [ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
export GOPATH=$PWD/.go CGO_ENABLED=0 GOPROXY=off GOFLAGS= HOME=$W/home
export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=archive
for target in "${TARGETS[@]}"; do
  make WHAT="cmd/$target" >"$W/make-$target.log" 2>&1
  cp "_output/bin/$target" "$OUT/"
done
cd / && rm -rf "$W"
