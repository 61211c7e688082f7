#!/usr/bin/env bash
# Runs the whole product on its embedded defaults: PostgreSQL from the system's binaries and a
# filesystem blob store under .kubemail-data/, examples/ applied, SMTP 2525, submission 2587,
# submissions 2465, IMAP 2143, IMAPS 2993, POP3 2110, POP3S 2995 on 127.0.0.1 with a self-signed
# certificate in .kubemail-data/tls. Extra arguments go to the mailserver (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_run_deps
cargo build --release -p mailserver
exec "$CARGO_TARGET_DIR/release/mailserver" --manifests examples "$@"
