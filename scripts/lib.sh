#!/usr/bin/env bash
# Shared helpers of confab's scripts: idempotent installs of what a fresh machine lacks.

step() { printf '\n==> %s\n' "$*"; }

# Installs Debian packages that are missing (apt-get update once, only when needed).
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# Pingora's zlib-ng build needs cmake and a C toolchain.
ensure_build_tools() {
    apt_install cmake build-essential pkg-config
    command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
}

# The browser tests drive Debian's Chromium through playwright-core (no browser download).
ensure_web_tools() {
    apt_install chromium
    # Node may come from elsewhere than Debian (with a newer npm): only fill a gap.
    command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
    if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then
        step "npm ci (web)"
        npm --prefix web ci --no-audit --no-fund
    fi
}
