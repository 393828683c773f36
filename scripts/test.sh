#!/usr/bin/env bash
# The test suite on any machine: installs what the tests need when it is missing (scripts/install-test-deps.sh),
# then runs cargo test with the arguments given (for example a test name to run only that test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
exec cargo test "$@"
