#!/usr/bin/env bash
# The main job on real input: a local shoal cluster (`shoal all-in-one`: manager on SQLite,
# scheduler and seed daemon; plus two daemons that know only the manager, each on its own
# loopback address with the standard ports) distributes a real file from a real nginx origin,
# and reports where every byte came from; then two containerd instances pull a real container
# image (busybox, built from Debian's busybox-static and pushed to Debian's docker-registry)
# through the two daemons' registry mirrors, and it reports what the registry served.
#
#   scripts/demo.sh [FILE]
#
# FILE defaults to the largest shared library of the Rust toolchain (a real ~100 MB file).
# SHOAL_BIN skips the build and uses that binary; SHOAL_SKIP_SETUP=1 skips package installs;
# SHOAL_DEMO_NET=127.0.N picks the loopback block (default 127.0.0); SHOAL_DEMO_IMAGE=0 skips the
# container image part (it needs root for containerd).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
net="${SHOAL_DEMO_NET:-127.0.0}"
[ "${SHOAL_SKIP_SETUP:-0}" = 1 ] || "$root/scripts/setup.sh"

if [ -n "${SHOAL_BIN:-}" ]; then
    shoal="$SHOAL_BIN"
else
    echo "building shoal (first build takes several minutes)..." >&2
    cargo build --manifest-path "$root/Cargo.toml" --bin shoal -q
    shoal="${CARGO_TARGET_DIR:-$root/target}/debug/shoal"
fi

file="${1:-}"
if [ -z "$file" ]; then
    file="$(ls -S "$(rustc --print sysroot)"/lib/librustc_driver-*.so 2>/dev/null | head -n1 || true)"
    [ -n "$file" ] || file=/bin/bash
fi
[ -f "$file" ] || { echo "error: $file is not a file" >&2; exit 1; }

work="$(mktemp -d /tmp/shoal-demo.XXXXXX)"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for mount in "$work"/mnt-*; do umount "$mount" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    # Keep the logs when something failed; they are what the error message points at.
    if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT INT TERM

# A real HTTP origin: nginx serving the file, logging body bytes per request.
mkdir -p "$work/www"
ln -s "$(readlink -f "$file")" "$work/www/$(basename "$file")"
name="$(basename "$file")"
origin_port=18080
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat > "$work/nginx.conf" <<NGINX
$user_line
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
    log_format bytes '\$request_method \$status \$body_bytes_sent';
    access_log $work/access.log bytes;
    client_body_temp_path $work/tmp;
    proxy_temp_path $work/tmp;
    fastcgi_temp_path $work/tmp;
    uwsgi_temp_path $work/tmp;
    scgi_temp_path $work/tmp;
    server {
        listen $net.1:$origin_port;
        root $work/www;
        disable_symlinks off;
    }
}
NGINX
mkdir -p "$work/tmp"
/usr/sbin/nginx -c "$work/nginx.conf" -e "$work/nginx-error.log"
url="http://$net.1:$origin_port/$name"

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what="$1"; shift
    for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "error: $what did not come up; logs in $work" >&2; exit 1
}

export SHOAL_LOG="${SHOAL_LOG:-warn}"
# One process with the manager (SQLite), the scheduler and a seed daemon with the proxy.
"$shoal" all-in-one --data-dir "$work/all-in-one" --ip "$net.1" \
    >"$work/all-in-one.out" 2>"$work/all-in-one.log" & pids+=($!)
wait_for "all-in-one" grep -q "join another node" "$work/all-in-one.out"
start_daemon() { # start_daemon NAME IP: a daemon that knows only the manager
    local node="$1" ip="$2"
    "$shoal" daemon --data-dir "$work/$node" --manager "http://$net.1:65003" --ip "$ip" \
        --hostname "$node" --socket "$work/$node.sock" 2>"$work/$node.log" & pids+=($!)
    wait_for "daemon $node" test -S "$work/$node.sock"
}
start_daemon node-a "$net.3"
start_daemon node-b "$net.4"

echo "origin:    $url ($(stat -Lc %s "$file") bytes, served by nginx)"
echo "cluster:   all-in-one on $net.1 (manager :8080/:65003, scheduler :8002, seed daemon, proxy :4001);"
echo "           daemons node-a $net.3 and node-b $net.4 found the scheduler through the manager"
"$shoal" get "$url" -O "$work/from-a" --socket "$work/node-a.sock" --no-progress | sed 's/^/node-a:    /'
"$shoal" get "$url" -O "$work/from-b" --socket "$work/node-b.sock" --no-progress | sed 's/^/node-b:    /'

expected="$(sha256sum < "$file" | cut -d' ' -f1)"
for node in a b; do
    actual="$(sha256sum < "$work/from-$node" | cut -d' ' -f1)"
    [ "$actual" = "$expected" ] || { echo "error: node-$node content differs ($actual != $expected)" >&2; exit 1; }
done
served="$(awk '$1 == "GET" { sum += $3 } END { print sum + 0 }' "$work/access.log")"
echo "verified:  both copies have sha256 $expected"
echo "nginx:     sent $served body bytes in total for $(stat -Lc %s "$file") bytes delivered to 2 daemons"

[ "${SHOAL_DEMO_IMAGE:-1}" = 1 ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "image:     skipped (containerd needs root; run as root to pull a real image through the mirror)"
    exit 0
fi

# A real image: Debian's static busybox as a one-layer OCI image, pushed with skopeo to Debian's
# docker-registry (the CNCF distribution registry), which logs every blob it serves.
busybox=/bin/busybox
image="$work/image"
mkdir -p "$image/rootfs/bin" "$image/layout/blobs/sha256"
cp "$busybox" "$image/rootfs/bin/busybox"
for applet in sh echo cat ls; do ln -s busybox "$image/rootfs/bin/$applet"; done
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -C "$image/rootfs" \
    -cf "$image/layer.tar" .
diff_id="$(sha256sum < "$image/layer.tar" | cut -d' ' -f1)"
gzip -n -c "$image/layer.tar" > "$image/layer.tar.gz"
blob() { # blob FILE: stores FILE in the layout, prints "DIGEST SIZE"
    local digest size
    digest="$(sha256sum < "$1" | cut -d' ' -f1)"
    size="$(stat -c %s "$1")"
    cp "$1" "$image/layout/blobs/sha256/$digest"
    echo "$digest $size"
}
read -r layer_digest layer_size < <(blob "$image/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$image/config.json"
read -r config_digest config_size < <(blob "$image/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" > "$image/manifest.json"
read -r manifest_digest manifest_size < <(blob "$image/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1.35"}}]}' \
    "$manifest_digest" "$manifest_size" > "$image/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$image/layout/oci-layout"

registry="$net.1:5000"
cat > "$work/registry.yml" <<REGISTRY
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
REGISTRY
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!)
wait_for "docker-registry" curl -sf "http://$registry/v2/"
skopeo copy -q --dest-tls-verify=false "oci:$image/layout:1.35" "docker://$registry/demo/busybox:1.35"
ref="$registry/demo/busybox:1.35"
echo "image:     $ref (busybox from Debian's busybox-static, layer $layer_size bytes), in docker-registry"

start_containerd() { # start_containerd NODE PROXY: a private containerd whose mirror is PROXY
    local node="$1" proxy="$2" dir="$work/containerd-$1"
    mkdir -p "$dir"
    # The mirror config users write: certs.d/<registry>/hosts.toml pointing at the daemon.
    "$shoal" init containerd --proxy "http://$proxy" --registry "$registry" --insecure \
        --config-dir "$dir/certs.d" >"$dir/init.log"
    cat > "$dir/config.toml" <<CONTAINERD
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
CONTAINERD
    containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 & pids+=($!)
    wait_for "containerd of $node" ctr --address "$dir/containerd.sock" version
}
parent_bytes() { # parent_bytes IP: what the daemon on IP has downloaded from parents so far
    curl -s "http://$1:4002/metrics" |
        awk '/^shoal_daemon_download_bytes_total\{source="parent"\}/ { n = $2 } END { print n + 0 }'
}
pull() { # pull NODE IP: containerd of NODE pulls through the daemon on IP, then checks /bin/busybox
    local node="$1" ip="$2" dir="$work/containerd-$1"
    start_containerd "$node" "$ip:4001"
    local t0 t1 before
    before="$(parent_bytes "$ip")"
    t0="$(date +%s.%N)"
    ctr --address "$dir/containerd.sock" -n demo images pull --hosts-dir "$dir/certs.d" "$ref" \
        >"$dir/pull.log" 2>&1 || { echo "error: containerd on $node could not pull; see $dir/pull.log" >&2; exit 1; }
    t1="$(date +%s.%N)"
    mkdir -p "$work/mnt-$node"
    ctr --address "$dir/containerd.sock" -n demo images mount "$ref" "$work/mnt-$node" >/dev/null
    local got
    got="$(sha256sum < "$work/mnt-$node/bin/busybox" | cut -d' ' -f1)"
    umount "$work/mnt-$node"
    [ "$got" = "$(sha256sum < "$busybox" | cut -d' ' -f1)" ] ||
        { echo "error: /bin/busybox unpacked on $node differs" >&2; exit 1; }
    local parent=$(( $(parent_bytes "$ip") - before ))
    printf '           %s containerd pulled %s through the mirror on %s:4001 in %.2fs; unpacked /bin/busybox matches; its daemon got %s bytes from parents\n' \
        "$node:" "$ref" "$ip" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$parent"
}
pull node-a "$net.3"
pull node-b "$net.4"
# Every GET of the layer blob that the registry answered, by user agent (containerd direct,
# or the daemons going back to source).
layer_gets="$(grep -c "GET /v2/demo/busybox/blobs/sha256:$layer_digest HTTP/[0-9.]*\" 20[06] " "$work/registry.log" || true)"
layer_bytes="$(grep "GET /v2/demo/busybox/blobs/sha256:$layer_digest HTTP/[0-9.]*\" 20[06] " "$work/registry.log" |
    awk '{ sum += $10 } END { print sum + 0 }')"
echo "registry:  served the layer blob in $layer_gets request(s), $layer_bytes bytes, for 2 pulls of a $layer_size-byte layer"
[ "$layer_bytes" -le "$layer_size" ] || { echo "error: the registry served the layer more than once" >&2; exit 1; }
