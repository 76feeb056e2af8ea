#!/usr/bin/env bash
# Runs the fanout comparison behind bench/RESULTS.md: confab, the bare ceiling server and
# every peer of bench/peers/ at each size, through the same generator, recording each run
# to bench/results.jsonl (from which `confab-bench chart` draws bench/charts/).
#
#   bench/compare.sh [fanout|search|many-channels|presence|all]     # default: all
#
# Needs the peers running (bench/peers/peers.sh up) and a release build; builds it if
# missing. Takes about 20 minutes on 2 cores, most of it confab's user setup (argon2).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
record=bench/results.jsonl
targets=(confab ceiling centrifuge nchan nats mosquitto)

cargo build --release -q -p confab-bench -p confab
bench() { target/release/confab-bench --server-bin target/release/confab --record "$record" "$@"; }

# members senders rate seconds: the sizes the issue names, at rates the box sustains.
fanout_sizes=(
    "100 1 20 5"
    "1000 1 20 5"
    "1000 2 100 5"
    "5000 1 10 5"
)

if [[ $what == fanout || $what == all ]]; then
    for size in "${fanout_sizes[@]}"; do
        read -r members senders rate seconds <<<"$size"
        for target in "${targets[@]}"; do
            bench --label "$members members × $rate msg/s" fanout --target "$target" \
                --members "$members" --senders "$senders" --rate "$rate" \
                --seconds "$seconds" --drain-seconds 10 | tail -n 1
        done
    done
fi

if [[ $what == search || $what == all ]]; then
    for target in "${targets[@]}"; do
        bench --label "1000 members" fanout --search --target "$target" \
            --members 1000 --rate 25 --seconds 5 --drain-seconds 5 | tail -n 1
    done
fi

if [[ $what == many-channels || $what == all ]]; then
    # The bare ceiling server has one channel only, so it sits this one out.
    for target in "${targets[@]}"; do
        [[ $target == ceiling ]] && continue
        bench many-channels --target "$target" --rate 2000 --seconds 10 | tail -n 1
    done
fi

if [[ $what == presence || $what == all ]]; then
    # Only centrifuge has presence events; confab's side (10k users, argon2-bound setup of
    # about 5 minutes) is `confab-bench --server-bin target/release/confab presence`.
    bench presence --target centrifuge --members 10000 --changes 100 --rate 10 | tail -n 1
fi

target/release/confab-bench chart --from "$record" --out bench/charts
