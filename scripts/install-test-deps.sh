#!/usr/bin/env bash
# Installs what the test suite needs besides Rust, where it is missing: Chromium and chromedriver (the operator
# page's browser test, tests/api/browser.rs), OpenSSL's headers with pkg-config (the in-process SMTP server the
# mail tests run, mailin-embedded, builds against the system OpenSSL), and PostgreSQL's server binaries (the
# PostgreSQL store's tests start a throwaway cluster of their own with /usr/lib/postgresql/*/bin/initdb; they do not
# use the cluster the package may set up). Debian and its derivatives, through apt-get, as root or through sudo;
# anywhere else it names what to install and stops. Installs nothing that is there already.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the tests need ${missing[*]} (Debian package names); install them with this system's package manager" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "error: the tests need ${missing[*]}; run this script as root, or install them: apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing what the tests need: ${missing[*]}" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
