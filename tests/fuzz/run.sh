#!/usr/bin/env bash
# run.sh [SECONDS] [BUILD_DIR] — builds the libFuzzer targets with clang in a build
# directory of their own (default: build-fuzz/ at the top of the tree) and runs each
# target for SECONDS (default 20) over its seed corpus, tests/fuzz/corpus/<target>/.
#
# Fails (exit 1) on any crash, failed check, leak, timeout (one input over 10 s) or
# memory blow-up (over 2 GB); the input that did it is kept in BUILD_DIR/fuzz-work/
# <target>/ and its path printed: add it to the corpus once fixed. Inputs the run
# found interesting go to BUILD_DIR/fuzz-work/<target>/corpus, never into the source
# tree (copy them in by hand: `fuzz_x -merge=1 tests/fuzz/corpus/fuzz_x NEW_DIR`).
# Exit 77 (skipped) when clang or libFuzzer is missing, unless CI is set.
#
# Environment: FUZZ_TARGETS (default: all three), FUZZ_JOBS (build jobs).
set -euo pipefail

secs=${1:-20}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${2:-$src/build-fuzz}
targets=${FUZZ_TARGETS:-fuzz_document fuzz_lua_convert fuzz_import}

missing() {
    if [ -n "${CI:-}" ]; then
        echo "error: $1 (scripts/setup.sh installs it)" >&2
        exit 1
    fi
    echo "skipped: $1 (scripts/setup.sh installs it)"
    exit 77
}
command -v clang >/dev/null 2>&1 || missing "clang is not installed"
command -v clang++ >/dev/null 2>&1 || missing "clang++ is not installed"
echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }' |
    clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1 ||
    missing "clang cannot link libFuzzer (install libclang-rt-dev)"

if [ ! -f "$build/CMakeCache.txt" ]; then
    mkdir -p "$build"
    CC=clang CXX=clang++ cmake -S "$src" -B "$build" -DPS_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 || {
        cat "$build/configure.log" >&2
        exit 1
    }
fi
# shellcheck disable=SC2086
cmake --build "$build" -j"${FUZZ_JOBS:-$(nproc)}" --target $targets >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
for t in $targets; do
    work=$build/fuzz-work/$t
    mkdir -p "$work/corpus"
    log=$work/run.log
    echo "== $t: ${secs} s"
    if "$build/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 -artifact_prefix="$work/" \
        "$work/corpus" "$src/tests/fuzz/corpus/$t" >"$log" 2>&1; then
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" \
            "$log" | sed 's/^/   /'
    else
        failed=1
        echo "FAIL: $t (log: $log)" >&2
        tail -n 60 "$log" >&2
        ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null |
            sed 's/^/   input: /' >&2 || true
    fi
done
[ "$failed" = 0 ] && echo "fuzz: all targets ran clean"
exit "$failed"
