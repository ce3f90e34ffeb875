#!/usr/bin/env bash
# What the tests need beyond Rust, installed only when missing: run by `cargo xtask test` before
# the tests (`GRIDLINK_SKIP_SETUP=1` skips it), so the README's test command works on a fresh
# machine. Debian packages need root: as another user they are installed with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "== system packages (JNA for the Kotlin bindings on the JVM)"
if [ ! -f /usr/share/java/jna.jar ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libjna-java >/dev/null
fi
command -v java >/dev/null || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq default-jre-headless >/dev/null; }

echo "== the sqlite3 tool (a test reads a phone's database file with it, as a thief would)"
command -v sqlite3 >/dev/null || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq sqlite3 >/dev/null; }

echo "== PostgreSQL (the county backend's conformance tests start a private cluster: xtask/pg.sh)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq postgresql >/dev/null
fi

echo "== browser for the web console tests (Debian Chromium, a Chinese font)"
if [ ! -x /usr/bin/chromium ] || ! fc-list :lang=zh family 2>/dev/null | grep -q .; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
[ -d tests/console/node_modules/playwright-core ] || npm ci --silent --no-audit --no-fund --prefix tests/console

echo "== automerge-repo, the reference for the side-by-side sync benchmark"
# `npm install`, not `npm ci`: cbor-x's optional prebuilt 2.2.3 helpers are not on the registry,
# so the lock file cannot list them and `npm ci` refuses it; install keeps the lock unchanged.
[ -d tests/automerge-repo/node_modules/@automerge/automerge-repo ] || npm install --silent --no-audit --no-fund --prefix tests/automerge-repo

echo "== Kotlin compiler (npm kotlin-compiler)"
if [ ! -x target/tools/kotlin/package/bin/kotlinc-jvm ]; then
    mkdir -p target/tools/kotlin
    (cd target/tools/kotlin && npm pack --silent kotlin-compiler@2.4.20 >/dev/null && tar xzf kotlin-compiler-2.4.20.tgz)
fi

echo "== cargo-fuzz (the fuzz targets run briefly at the end of the tests)"
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz@0.13.2

echo "== Python test runner, and a third-party Open311 client for the conformance test"
python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q pytest
python3 -c "import georeport" 2>/dev/null || python3 -m pip install -q georeport==0.3.1

echo "== cargo-deb (the Debian package is built, installed and started by the tests when root)"
command -v adduser >/dev/null || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq adduser >/dev/null; }
cargo deb --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb@3.8.0
