#!/usr/bin/env bash
# Runs `confab dev` from a fresh machine: installs build tools, builds, serves on
# https://127.0.0.1:8443 with data in ./confab-data. Extra arguments go to `confab dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_build_tools
exec cargo run --release --locked --bin confab -- dev "$@"
