#!/usr/bin/env bash
# Starts the machine's PostgreSQL (Debian cluster) and makes sure the role the tests use exists.
# Prints the URL to export as SHOAL_TEST_POSTGRES_URL. Idempotent; needs root or sudo.
set -euo pipefail
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql >&2
fi
cluster="$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')"
if [ -z "$cluster" ]; then
    version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
    $sudo pg_createcluster "$version" main >&2
    cluster="$version main"
fi
# shellcheck disable=SC2086
set -- $cluster
port="$(pg_lsclusters --no-header | awk -v v="$1" -v n="$2" '$1==v && $2==n {print $3}')"
if ! pg_lsclusters --no-header | awk -v v="$1" -v n="$2" '$1==v && $2==n {print $4}' | grep -q online; then
    $sudo pg_ctlcluster "$1" "$2" start >&2
fi
as_postgres() { $sudo runuser -u postgres -- "$@"; }
for _ in $(seq 1 50); do
    as_postgres psql -p "$port" -tAc 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
done
if [ "$(as_postgres psql -p "$port" -tAc "select 1 from pg_roles where rolname='shoal'")" != "1" ]; then
    as_postgres psql -p "$port" -qc "create role shoal login password 'shoal' createdb" >&2
fi
echo "postgres://shoal:shoal@127.0.0.1:$port/postgres"
