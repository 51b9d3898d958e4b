#!/usr/bin/env bash
# The main job on real input: a local shoal cluster (`shoal all-in-one`: manager on SQLite,
# scheduler and seed daemon; plus two daemons that know only the manager, each on its own
# loopback address with the standard ports) distributes a real file from a real nginx origin,
# and reports where every byte came from.
#
#   scripts/demo.sh [FILE]
#
# FILE defaults to the largest shared library of the Rust toolchain (a real ~100 MB file).
# SHOAL_BIN skips the build and uses that binary; SHOAL_SKIP_SETUP=1 skips package installs;
# SHOAL_DEMO_NET=127.0.N picks the loopback block (default 127.0.0).
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
