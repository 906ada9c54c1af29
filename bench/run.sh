#!/usr/bin/env bash
# bench/run.sh [--smoke] [--build-dir DIR] [--out DIR] [--no-postgres]
#
# Runs every bench/ program for memory:, sqlite: and postgres:// and writes
#   OUT/results.md    the Markdown table (targets met / MISSED), machine, notes
#   OUT/bench.png     a plot (gnuplot; skipped with a message when not installed)
#   OUT/results.tsv   every RESULT and NOTE line;  OUT/logs/  each program's output
#
# Full mode (default) takes about a quarter of an hour and writes into bench/results/;
# --smoke (CI: the bench_smoke CTest test) uses tiny sizes and scaled-down timings,
# takes about a minute and writes into BUILD-DIR/bench-smoke/ unless --out is given.
# PostgreSQL: a throwaway cluster (tests/pg/with_postgres.sh) unless
# PS_TEST_POSTGRES_URL is set; without PostgreSQL installed its rows are skipped
# (a failure when PS_REQUIRE_POSTGRES=1, as in CI).
# Exit status: 0 when every program ran (a MISSED target is a result, not a failure).
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
mode=full
build="$root/build"
out=
no_pg=0
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) mode=smoke ;;
    --build-dir) build=$2; shift ;;
    --out) out=$2; shift ;;
    --no-postgres) no_pg=1 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
build=$(cd "$build" 2>/dev/null && pwd) || { echo "run.sh: no build dir" >&2; exit 2; }
bin="$build/bench"
for p in bench_cycle bench_writes bench_autosave bench_memory bench_scale bench_contention; do
    if [ ! -x "$bin/$p" ]; then
        echo "run.sh: $bin/$p not built (cmake --build $build)" >&2
        exit 2
    fi
done

# One throwaway PostgreSQL cluster for the whole run: re-run this script inside it.
if [ "$no_pg" = 0 ] && [ -z "${PS_TEST_POSTGRES_URL:-}" ]; then
    "$root/tests/pg/with_postgres.sh" "$0" "${args[@]}"
    rc=$?
    if [ $rc = 77 ]; then
        echo "run.sh: no PostgreSQL installed: running without it"
        exec "$0" "${args[@]}" --no-postgres
    fi
    exit $rc
fi

if [ -z "$out" ]; then
    if [ "$mode" = smoke ]; then out="$build/bench-smoke"; else out="$here/results"; fi
fi
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ps-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
tsv="$out/results.tsv"
: >"$tsv"
failed=0
start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

backends=(memory sqlite)
[ "$no_pg" = 0 ] && backends+=(postgres)
url_of() { # backend bench → URL
    case "$1" in
    memory) echo "memory:$2" ;;
    sqlite) echo "sqlite:$work/$2.db" ;;
    postgres) echo "$PS_TEST_POSTGRES_URL" ;;
    esac
}

# run NAME BACKEND ARGS… : one program on one backend, output kept and collected.
run() {
    local name=$1 backend=$2 tag=""
    shift 2
    local prev="" a
    for a in "$@"; do # one log per phase: bench_contention runs twice per backend
        [ "$prev" = --phase ] && tag="-$a"
        prev=$a
    done
    local log="$out/logs/$name-$backend$tag.log" t0=$SECONDS
    echo "== $name $backend $*"
    "$bin/$name" "$(url_of "$backend" "$name")" "$@" >"$log" 2>&1
    local rc=$?
    grep -E '^(RESULT|NOTE)	' "$log" >>"$tsv"
    grep -vE '^(RESULT|NOTE)	' "$log" | sed 's/^/   /'
    if [ $rc != 0 ]; then
        echo "   FAILED (exit $rc), see $log"
        printf 'NOTE\t%s\t%s\tFAILED: exit %s (see logs/%s)\n' "$name" "$backend" "$rc" \
            "$(basename "$log")" >>"$tsv"
        failed=1
    fi
    echo "   ($((SECONDS - t0)) s)"
}

s=()
[ "$mode" = smoke ] && s=(--smoke)

# The hand-off phase of bench_contention is mostly waiting for the library's timers
# (up to ~70 s with the default settings): the three backends run it side by side,
# in the background of bench_cycle and bench_writes.
handoff_pids=()
printf 'NOTE\tcontention\tall\t%s\n' "the hand-off phases ran side by side, in the \
background of bench_cycle and bench_writes (they mostly wait on the library timers)" >>"$tsv"
for b in "${backends[@]}"; do
    (run bench_contention "$b" "${s[@]}" --phase handoff >"$work/handoff-$b.out") &
    handoff_pids+=($!)
done

for b in "${backends[@]}"; do run bench_cycle "$b" "${s[@]}"; done
for b in "${backends[@]}"; do run bench_writes "$b" "${s[@]}"; done
for b in "${backends[@]}"; do run bench_autosave "$b" "${s[@]}"; done
for b in "${backends[@]}"; do
    if [ "$mode" = full ]; then
        run bench_memory "$b" --soak 45
    else
        run bench_memory "$b" "${s[@]}"
    fi
done
for b in "${backends[@]}"; do
    if [ "$mode" = full ] && [ "$b" = postgres ]; then
        # Filling PostgreSQL goes through the backend API (two round trips a row).
        run bench_scale "$b" --max-fill 100000
    else
        run bench_scale "$b" "${s[@]}"
    fi
done
for b in "${backends[@]}"; do
    run bench_contention "$b" "${s[@]}" --phase throughput
done
for i in "${!handoff_pids[@]}"; do
    wait "${handoff_pids[$i]}"
    cat "$work/handoff-${backends[$i]}.out"
    grep -q "FAILED (exit" "$work/handoff-${backends[$i]}.out" && failed=1
done

elapsed=$(( $(date +%s) - start ))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
"$here/report.sh" "$tsv" "$out" "$mode" "$elapsed" "$load_start" "$load_end" "$root"
[ $? = 0 ] || failed=1
echo "run.sh: $mode run took ${elapsed} s; results in $out/results.md"
exit $failed
