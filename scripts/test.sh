#!/usr/bin/env bash
# Sets up, then runs the whole test suite twice: a normal build, and a build under
# AddressSanitizer + UndefinedBehaviorSanitizer. PostgreSQL tests start a throwaway
# server themselves (tests/pg/with_postgres.sh); with PS_REQUIRE_POSTGRES=1 (CI) a
# missing PostgreSQL is a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== tests (normal build)"
ctest --test-dir build --output-on-failure -j2 ${CTEST_ARGS:-}

echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
BUILD_DIR=build-asan BUILD_TYPE=Debug CMAKE_ARGS="-DPS_SANITIZE=ON" scripts/setup.sh
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j2 ${CTEST_ARGS:-}
echo "== all tests passed"
