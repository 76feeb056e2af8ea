#!/usr/bin/env bash
# The whole confab test suite, from a fresh machine: installs what the build and the
# tests need (build tools, Chromium, Redis, Cassandra, Kafka), then runs formatting,
# lint and every test: unit, conformance against embedded and real engines, end to end.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_build_tools
ensure_web_tools

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "services: Redis, Cassandra 5, Kafka 4 on 127.0.0.1 (the drivers' conformance suites need them)"
scripts/services/services.sh up all
# Stop exactly what this run started, however it ends.
trap 'bench/peers/peers.sh down all >/dev/null 2>&1 || true; scripts/cluster.sh down >/dev/null 2>&1 || true; scripts/services/services.sh down all' EXIT
set -a
# shellcheck source=/dev/null
. .services/endpoints.env
set +a

step "cargo test --workspace"
cargo test --workspace --locked -- --test-threads="${CONFAB_TEST_THREADS:-2}"

step "bench peers: centrifuge, nchan, NATS, Mosquitto; a quick fanout and many-channels through each adapter, presence through centrifuge"
bench/peers/peers.sh up all
for peer in centrifuge nchan nats mosquitto; do
    row=$(target/debug/confab-bench --quick fanout --target "$peer" | tail -n 1)
    echo "$row"
    # Every member got every message exactly once: the adapter speaks the peer's protocol.
    grep -q "lost 0 of .* 0 duplicates, 0 disconnected" <<<"$row" || {
        echo "fanout through $peer lost or duplicated messages" >&2
        exit 1
    }
    row=$(target/debug/confab-bench --quick many-channels --target "$peer" | tail -n 1)
    echo "$row"
    # Messages went out, and every member of every channel got each exactly once over the
    # adapter's several-channels join (nchan: a connection per channel).
    grep -q "^| many-channels ($peer) | [1-9][0-9]* |.*lost 0 of [1-9][0-9]* deliveries, 0 duplicates, 0 disconnected" <<<"$row" || {
        echo "many-channels through $peer lost or duplicated messages" >&2
        exit 1
    }
    row=$(target/debug/confab-bench --quick idle --target "$peer" | tail -n 1)
    echo "$row"
    grep -q "^| idle ($peer) | 20 |" <<<"$row" || {
        echo "idle against $peer did not open every connection" >&2
        exit 1
    }
done
# The one peer with presence events: each status change reaches every member, exactly once.
row=$(target/debug/confab-bench --quick presence --target centrifuge | tail -n 1)
echo "$row"
grep -q "^| presence (centrifuge) | [1-9][0-9]* |.*missed 0 of [1-9][0-9]* pushes ([^)]*), 0 duplicates, 0 unexpected, 0 changes failed, 0 disconnected" <<<"$row" || {
    echo "presence through centrifuge missed or duplicated join/leave pushes" >&2
    exit 1
}
bench/peers/peers.sh down all

step "local cluster: scripts/cluster.sh up, a message across regions, down"
scripts/cluster.sh up
NODE_EXTRA_CA_CERTS=target/cluster/ca/ca.pem node scripts/cluster-smoke.mjs target/cluster/endpoints.json
scripts/cluster.sh down

step "web: type-check and unit tests"
npm --prefix web run typecheck
node --test web/tests/

step "web: Chromium end to end against confab dev"
CONFAB_BIN=target/debug/confab node --test web/tests/browser.e2e.mjs
