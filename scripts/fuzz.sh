#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time, seeded from fuzz/seeds/<target> (bytes from the
# real captures). Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-15}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

# cargo-fuzz needs nightly flags (-Z sanitizer); use the nightly toolchain when installed.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${fuzz[@]}" build
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    t_secs=$secs
    # The engine target first flattens the embedded 7.8 MB country database, which takes
    # ~10-15 s under ASan and counts against -max_total_time: give it that time on top.
    [ "$t" = engine ] && t_secs=$((secs + 45))
    echo "fuzz: $t for ${t_secs}s"
    "${fuzz[@]}" run "$t" "$work/$t" "${seeds[@]}" -- \
        -max_total_time="$t_secs" -rss_limit_mb=2048 -print_final_stats=0 2>&1 | tail -n 2
done
echo "fuzz: ${#targets[@]} targets ran clean"
