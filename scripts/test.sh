#!/usr/bin/env bash
# The test command (README "Quick start"): formatting, lints, every test, then each fuzz target
# for a short bounded time. Tests that need root and network namespaces (XDP, AF_XDP, the lab)
# run when invoked as root and print an explicit skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Lab and XDP tests share the machine's namespaces and CPU: keep them serial.
cargo test --workspace -- --test-threads="${TEST_THREADS:-2}"

if cargo fuzz --help >/dev/null 2>&1; then
    bash scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
else
    echo "fuzz: skipped (cargo-fuzz not installed: cargo install cargo-fuzz)"
fi
