#!/usr/bin/env bash
# Installs the system packages shoal needs to build and test: protoc for the gRPC crates and
# nginx as a real HTTP origin for the demo and end-to-end tests. Idempotent; needs root or sudo.
set -euo pipefail

packages=()
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
command -v curl >/dev/null 2>&1 || packages+=(curl)

if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${packages[*]}" >&2
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${packages[@]}" >&2
fi
