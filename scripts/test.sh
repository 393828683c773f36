#!/usr/bin/env bash
# The test suite on any machine: installs what the tests need when it is missing (scripts/install-test-deps.sh),
# then runs cargo test with the arguments given (for example a test name to run only that test). Without
# arguments it then runs the integration suite a second time with every service on PostgreSQL
# (HSR_TEST_STORE=postgres; the tests start a throwaway cluster of their own).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
if [ "$#" -gt 0 ]; then
    exec cargo test "$@"
fi
cargo test
HSR_TEST_STORE=postgres cargo test --test api
