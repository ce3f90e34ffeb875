#!/bin/bash
# What a sync round costs each of the server's threads (docs/benchmarks.md, "What each thread
# costs a round"). Runs `sync_bench load 1000` against `<bindir>/gridlink-server`, reads the CPU
# time of the server's threads by name over 3 s of the back-to-back phase, prints the phase's row
# and each thread's CPU per round at the phase's rate, and stops the bench there.
# usage: bash xtask/thread_cpu.sh <bindir with gridlink-server and sync_bench>
set -u
bindir=$(cd "$1" && pwd)
work=$(mktemp -d /tmp/thread_cpu.XXXX)
log=$work/bench.log
export TMPDIR=$work GRIDLINK_SERVER_BIN=$bindir/gridlink-server
cd "$work"
setsid "$bindir/sync_bench" load 1000 > "$log" 2>&1 &
bench=$!
stop() { kill -- -$bench 2>/dev/null; sleep 1; rm -rf "$work"; }
trap stop EXIT
for _ in $(seq 1 1200); do grep -q "load devices logged in" "$log" && break; sleep 0.5; done
sleep 0.7
server=$(pgrep -P $bench -f "gridlink-server" | head -1)
[ -n "$server" ] || { echo "no server under the bench"; tail -5 "$log"; exit 1; }
ticks_by_thread() {
    for t in /proc/$server/task/*; do
        # Fields after the command name: utime and stime are the 12th and 13th.
        echo "$(cat $t/comm) $(sed 's/.*) //' $t/stat | awk '{print $12 + $13}')"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
before=$(ticks_by_thread); sleep 3; after=$(ticks_by_thread)
for _ in $(seq 1 600); do grep -q "^| 1000 |" "$log" && break; sleep 1; done
row=$(grep "^| 1000 |" "$log") || { echo "the bench ended early"; tail -5 "$log"; exit 1; }
echo "$row"
rate=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $4); print $4}')
hz=$(getconf CLK_TCK)
join <(echo "$before") <(echo "$after") | awk -v r="$rate" -v hz="$hz" \
    '{ms = ($3 - $2) * 1000 / hz; if (ms > 0) printf "  %s: %d ms of CPU in 3 s, %.3f ms a round\n", $1, ms, ms / (r * 3)}'
