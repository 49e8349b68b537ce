#!/usr/bin/env bash
# The single test command (README and CI): installs what the tests need when it
# is missing, then runs the whole test suite.
#
#   scripts/test.sh            # unit + integration + doc tests, bench smoke run, compare.sh --quick, 2-minute soak
#   scripts/test.sh NAME       # extra arguments go to `cargo test` (no bench smoke run then)
set -euo pipefail

cd "$(dirname "$0")/.."

# Non-interactive everywhere (CI has no stdin).
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo -n "$@"
    fi
}

# promtool validates the /metrics exposition in the integration tests.
if ! command -v promtool >/dev/null 2>&1; then
    echo "test.sh: installing promtool (Debian package prometheus)" >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends prometheus </dev/null
fi

# tests/peer_suites.rs runs smuggler (a Python 3 script) from ../shared/tools.
if ! command -v python3 >/dev/null 2>&1; then
    echo "test.sh: installing python3" >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends python3 </dev/null
fi

# The status page browser test (tests/status_page.rs) drives Debian's chromium
# through playwright-core, pinned in tests/browser/package-lock.json. It fails
# rather than skips without them, so install both here.
if ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: installing chromium (Debian package chromium)" >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq chromium </dev/null
fi
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
    echo "test.sh: npm ci --prefix tests/browser (playwright-core)" >&2
    npm ci --prefix tests/browser --no-audit --no-fund </dev/null
fi

# lib, bins, integration tests and doc tests of every workspace crate (rollgate
# and the loadtest generator). Criterion benches are not part of plain
# `cargo test`.
cargo test --workspace "$@"

# Bench smoke test: builds the benches with the test profile and runs every
# benchmark body once (criterion's test mode), in seconds, so a broken bench
# fails CI without CI paying for measurements.
if [ "$#" -eq 0 ]; then
    cargo test --benches
fi

# Load-test smoke run: compare.sh's rollgate leg (plus direct) for seconds,
# debug build, no thresholds; it only proves the comparison tooling works.
if [ "$#" -eq 0 ]; then
    loadtest/compare.sh --quick
fi

# The 2-minute soak: release build, 500 req/s open loop through a
# whole compressed rollout; fails on RSS drift beyond 10 %, fd growth, any
# error but the injected ones, or no promotion. On a fresh clone it took
# 6 min 10 s including the release build (BENCHMARKS.md, "Soak").
if [ "$#" -eq 0 ]; then
    SOAK_SECONDS=120 loadtest/soak.sh
fi
