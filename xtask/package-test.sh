#!/usr/bin/env bash
# Installs the Debian package on this machine and runs it as a service would run: as the unit's
# user, with the unit's ExecStart and working directory (CI has no systemd). Checks the
# configuration, /healthz, and that the service's files belong to its user; then purges the
# package and its test data. Needs root; refuses to touch a machine where gridlink is installed.
set -euo pipefail
deb="$1"
if dpkg -s gridlink >/dev/null 2>&1; then
    echo "gridlink is installed on this machine already: package test skipped" >&2
    exit 0
fi
dpkg -i "$deb"
unit=/lib/systemd/system/gridlink.service
user=$(sed -n 's/^User=//p' "$unit")
workdir=$(sed -n 's/^WorkingDirectory=//p' "$unit")
read -r -a exec_start <<<"$(sed -n 's/^ExecStart=//p' "$unit")"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    dpkg --purge gridlink >/dev/null || true
    rm -rf /var/lib/gridlink
}
trap cleanup EXIT

echo "== check-config as $user"
runuser -u "$user" -- "${exec_start[0]}" --config /etc/gridlink/gridlink.toml check-config

echo "== start: ${exec_start[*]} (as $user, in $workdir, port $port)"
(cd "$workdir" && exec runuser -u "$user" -- env GRIDLINK_LISTEN="127.0.0.1:$port" "${exec_start[@]}") >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1).read() == b'ok' else 1)" 2>/dev/null; then
        ok=1
        break
    fi
    sleep 0.2
done
[ "${ok:-}" = 1 ] || { echo "the packaged server did not answer /healthz:"; cat "$log"; exit 1; }
echo "/healthz answers ok"

owner() { stat -c %U "$1"; }
for f in /var/lib/gridlink /var/lib/gridlink/town.db /var/lib/gridlink/data; do
    [ "$(owner "$f")" = "$user" ] || { echo "$f belongs to $(owner "$f"), not $user"; exit 1; }
done
[ "$(stat -c %G:%a /etc/gridlink/gridlink.toml)" = "$user:640" ] || { echo "config not root:$user 640"; exit 1; }
echo "files belong to $user; the configuration is readable by it alone"
