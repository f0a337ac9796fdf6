#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing (Node for the
# realtime-js compatibility test, PostgreSQL for the storage suite, nats-server for the cluster
# tests), then runs formatting, clippy with warnings denied, and every test of the workspace —
# building the workspace once.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [ ! -d tests/compat/node_modules/@supabase/realtime-js ]; then
  npm ci --prefix tests/compat --no-audit --no-fund --loglevel=error
fi

cargo fmt --all --check
# One build for lints and tests: clippy-driver compiles the workspace's own crates as the
# compiler wrapper (the lints with warnings denied, then full code generation), so the tests run
# on those artifacts. `cargo clippy` would check every crate a second time first (~2.5 min
# here). CLIPPY_ARGS is how cargo-clippy itself hands clippy-driver its arguments.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --profile ci --workspace --all-targets --no-run
cargo test --profile ci --workspace
