#!/usr/bin/env bash
# The whole confab test suite, from a fresh machine: installs what the build and the
# tests need, then runs formatting, lint and every test (unit, conformance, end to end).
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

step "cargo test --workspace"
cargo test --workspace --locked -- --test-threads="${CONFAB_TEST_THREADS:-2}"

step "web: type-check and unit tests"
npm --prefix web run typecheck
node --test web/tests/

step "web: Chromium end to end against confab dev"
CONFAB_BIN=target/debug/confab node --test web/tests/browser.e2e.mjs
