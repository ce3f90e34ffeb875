#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests (Debian's PostgreSQL, see ../shared/RECIPES.md):
#   xtask/pg.sh start        prints "<dir> <url>" of a new cluster on 127.0.0.1
#   xtask/pg.sh stop <dir>   stops it and deletes it
# initdb refuses root: as root the cluster runs as the postgres user.
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
AS=()
if [ "$(id -u)" -eq 0 ]; then AS=(runuser -u postgres --); fi
case "${1:-}" in
start)
    D=$(mktemp -d /tmp/gridlink-pg.XXXXXX)
    chmod 755 "$D"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$D"; fi
    "${AS[@]}" "$PGBIN/initdb" -D "$D/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    # The first free port from 55432.
    for port in $(seq 55432 55482); do
        if "${AS[@]}" "$PGBIN/pg_ctl" -D "$D/data" -l "$D/log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $D -c fsync=off" start >/dev/null 2>&1; then
            echo "$D postgres://postgres@127.0.0.1:$port/postgres"
            exit 0
        fi
    done
    cat "$D/log" >&2
    exit 1
    ;;
stop)
    D=${2:?the directory printed by start}
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$D/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$D"
    ;;
*)
    echo "usage: xtask/pg.sh start | stop <dir>" >&2
    exit 2
    ;;
esac
