#!/usr/bin/env bash
# Fuzzes one target, or all of them one after another, with cargo-fuzz (libFuzzer) on the
# stable toolchain. The corpora in fuzz/corpus/ are kept in the repository and replayed by
# `cargo test -p mailserver --test fuzz_corpora`; new findings land in fuzz/artifacts/.
#
#   bash scripts/fuzz.sh                 # every target, 10 minutes each
#   bash scripts/fuzz.sh mime 60         # one target, 60 seconds
#   SANITIZER=address bash scripts/fuzz.sh smtp 600
#   bash scripts/fuzz.sh --cmin          # minimise every corpus in place
#
# Targets: smtp (SMTP session, random read sizes), imap (imap-next decoding and the session
# before login), pop3 (POP3 session with a fake maildrop), mime (ENVELOPE, BODYSTRUCTURE and
# sections of arbitrary messages), manifests (the local-mode YAML loader).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz passes nightly-only flags; this lets the stable compiler accept them.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
sanitizer="${SANITIZER:-none}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/kubemail/target}/fuzz"
targets=(smtp imap pop3 mime manifests)

if [[ "${1:-}" == "--cmin" ]]; then
    for t in "${targets[@]}"; do
        cargo fuzz cmin -s "$sanitizer" --target-dir "$target_dir" "$t" "corpus/$t"
    done
    exit 0
fi

run() {
    local t=$1 seconds=$2
    mkdir -p "corpus/$t"
    nice -n 19 cargo fuzz run -s "$sanitizer" --target-dir "$target_dir" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10
}

if [[ $# -ge 1 ]]; then
    run "$1" "${2:-600}"
else
    for t in "${targets[@]}"; do run "$t" 600; done
fi
