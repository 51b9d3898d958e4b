#!/usr/bin/env bash
# Installs the system packages shoal needs to build and test: protoc for the gRPC crates, nginx
# as a real HTTP origin for the demo and end-to-end tests, and the CNCF registry, containerd and
# skopeo for the interop tests, PostgreSQL for the manager, aria2/opentracker/mktorrent for
# the benchmark lab. Idempotent; needs root or sudo.
set -euo pipefail

packages=()
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
command -v curl >/dev/null 2>&1 || packages+=(curl)
# Real third-party parts for the interop tests: CNCF registry, containerd, skopeo.
[ -x /usr/bin/docker-registry ] || packages+=(docker-registry)
command -v containerd >/dev/null 2>&1 || packages+=(containerd)
command -v skopeo >/dev/null 2>&1 || packages+=(skopeo)
# The demo's real image: Debian's static busybox.
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || packages+=(busybox-static)
# The manager's PostgreSQL storage suite (scripts/postgres.sh starts the server).
command -v pg_lsclusters >/dev/null 2>&1 || packages+=(postgresql)
# The benchmark lab: network namespaces and tc, and the BitTorrent baseline.
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v tc >/dev/null 2>&1 || packages+=(iproute2)
command -v aria2c >/dev/null 2>&1 || packages+=(aria2)
command -v opentracker >/dev/null 2>&1 || [ -x /usr/bin/opentracker ] || packages+=(opentracker)
command -v mktorrent >/dev/null 2>&1 || packages+=(mktorrent)

if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${packages[*]}" >&2
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${packages[@]}" >&2
fi
