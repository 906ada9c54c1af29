#!/usr/bin/env bash
# bench/report.sh TSV OUT MODE ELAPSED LOAD_START LOAD_END ROOT — called by run.sh:
# turns the RESULT / NOTE lines into OUT/results.md and, with gnuplot, OUT/bench.png.
set -u
tsv=$1 out=$2 mode=$3 elapsed=$4 load_start=$5 load_end=$6 root=$7
here=$(cd "$(dirname "$0")" && pwd)
md="$out/results.md"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo)
disk_dev=$(df -P "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $1}')
disk_fs=$(df -PT "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $2}')
disk_name=$(basename "$disk_dev")
rot=$(cat "/sys/block/${disk_name%%[0-9]*}/queue/rotational" 2>/dev/null || echo "?")
case "$rot" in
0) rot="non-rotational as the kernel reports it" ;;
1) rot="rotational as the kernel reports it; virtio disks report so whatever backs them" ;;
*) rot="rotational: unknown" ;;
esac
commit=${PS_BENCH_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=$(git -C "$root" status --porcelain -- src include 2>/dev/null | wc -l)
[ "$dirty" != 0 ] && commit="$commit (library sources with uncommitted changes)"
cc_version=$(cc --version 2>/dev/null | head -n1)
sqlite_version=$(sqlite3 --version 2>/dev/null | cut -d' ' -f1)
jansson_version=$(pkg-config --modversion jansson 2>/dev/null)
pg_version=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 | \
    xargs -r -I{} sh -c '{}/postgres --version' 2>/dev/null)

{
    echo "# profileservice benchmarks ($mode run)"
    echo
    echo "Written by \`bench/run.sh$([ "$mode" = smoke ] && echo " --smoke")\` on" \
        "$(date -u '+%Y-%m-%d %H:%M UTC') in ${elapsed} s; library commit $commit."
    if [ "$mode" = smoke ]; then
        echo
        echo "**Smoke run**: tiny sizes and scaled-down timings; it only shows that the"
        echo "benchmarks build and run. Its numbers answer nothing."
    fi
    echo
    echo "Each program answers one question and prints ratios against the raw backend"
    echo "measured in the same run; see \`bench/README.md\` for what each one does."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $cpu, $(nproc) cores (\`nproc\`); memory $mem"
    echo "- Disk: \`$disk_dev\` ($disk_fs, $rot), holding the SQLite files and the"
    echo "  PostgreSQL cluster (a throwaway cluster: fsync=off, synchronous_commit=off,"
    echo "  as \`tests/pg/with_postgres.sh\` starts it; SQLite runs with synchronous=FULL)"
    echo "- $(uname -sr); $cc_version; jansson $jansson_version; SQLite $sqlite_version;" \
        "${pg_version:-no PostgreSQL}"
    echo "- Load average (1, 5, 15 min) at the start: $load_start; at the end: $load_end."
    echo "  Other engineers were compiling, fuzzing and running simulations on the same"
    echo "  two cores during the run, so wall-clock rates are noisy; every ratio is"
    echo "  measured side by side in the same run, and rounds alternate to share the noise."
    echo
    echo "## Targets"
    echo
    echo "| question | backend | metric | value | target | verdict |"
    echo "|---|---|---|---|---|---|"
    awk -F'\t' -v mode="$mode" '
        BEGIN { split("cycle writes autosave memory scale contention", order, " ")
                for (i in order) rank[order[i]] = i }
        function fmt(x) {
            return (x + 0 >= 1000 || x + 0 <= -1000) ? sprintf("%.0f", x) : sprintf("%.3g", x)
        }
        $1 == "RESULT" && $8 != "" {
            v = (mode == "smoke" ? "not judged (smoke)" : ($8 == "MISSED" ? "**MISSED**" : $8))
            printf "%d\t%06d\t| %s | %s | %s | %s %s | %s | %s |\n", rank[$2], NR, $2,
                   $3, $4, fmt($5), $6, $7, v }' "$tsv" | sort -t$'\t' -k1,1n -k2,2n | cut -f3-
    echo
    echo "## All results"
    awk -F'\t' '
        function fmt(x) {
            return (x + 0 >= 1000 || x + 0 <= -1000) ? sprintf("%.0f", x) : sprintf("%.3g", x)
        }
        $1 == "RESULT" {
            if (!($2 in seen_bench)) { seen_bench[$2] = 1; benches[nb++] = $2 }
            k = $2 SUBSEP $4
            if (!(k in seen_metric)) {
                seen_metric[k] = 1; metrics[$2, nm[$2]++] = $4; unit[k] = $6
            }
            if (!($3 in seen_backend)) { seen_backend[$3] = 1; backends[nk++] = $3 }
            value[$2, $4, $3] = $5
            has[$2, $3] = 1
        }
        END {
            split("cycle writes autosave memory scale contention", known, " ")
            n = 0
            for (i = 1; i <= 6; i++) if (known[i] in seen_bench) sorted[n++] = known[i]
            for (b = 0; b < nb; b++) {
                k = 0
                for (i = 1; i <= 6; i++) if (benches[b] == known[i]) k = 1
                if (!k) sorted[n++] = benches[b]
            }
            for (b = 0; b < n; b++) {
                bench = sorted[b]
                nc = 0  # the backends this bench has results for
                for (j = 0; j < nk; j++) if ((bench, backends[j]) in has) cols[nc++] = backends[j]
                printf "\n### %s\n\n| metric |", bench
                for (j = 0; j < nc; j++) printf " %s |", cols[j]
                printf "\n|---|"
                for (j = 0; j < nc; j++) printf "---:|"
                printf "\n"
                for (i = 0; i < nm[bench]; i++) {
                    m = metrics[bench, i]
                    u = unit[bench SUBSEP m]
                    printf "| %s%s |", m, (u == "" ? "" : " (" u ")")
                    for (j = 0; j < nc; j++) {
                        v = value[bench, m, cols[j]]
                        printf " %s |", (v == "" ? "–" : fmt(v))
                    }
                    printf "\n"
                }
            }
        }' "$tsv"
    echo
    echo "## Notes"
    echo
    awk -F'\t' '$1 == "NOTE" && !seen[$0]++ { printf "- %s, %s: %s\n", $2, $3, $4 }' "$tsv"
    missed=$(awk -F'\t' '$1 == "RESULT" && $8 == "MISSED"' "$tsv" | wc -l)
    echo
    echo "## Missed targets"
    echo
    if [ "$mode" = smoke ]; then
        echo "Not judged in a smoke run."
    elif [ "$missed" = 0 ]; then
        echo "None."
    else
        awk -F'\t' '
            function fmt(x) {
            return (x + 0 >= 1000 || x + 0 <= -1000) ? sprintf("%.0f", x) : sprintf("%.3g", x)
        }
            $1 == "RESULT" && $8 == "MISSED" {
            printf "- %s / %s: %s = %s %s (target %s)\n", $2, $3, $4, fmt($5), $6, $7 }' "$tsv"
        echo
        if [ -f "$out/profile.md" ]; then
            echo "Where the time goes (perf / callgrind) and what to change in the library:"
            echo "[profile.md](profile.md)."
        fi
    fi
    echo
    echo "![plot](bench.png)"
} >"$md"

# ---- the plot -------------------------------------------------------------------------
if ! command -v gnuplot >/dev/null 2>&1; then
    echo "report.sh: gnuplot not installed (Debian package gnuplot-nox): no plot"
    exit 0
fi
dat="$out/plot-data"
mkdir -p "$dat"
pick() { # bench metric → "backend value" lines
    awk -F'\t' -v b="$1" -v m="$2" '$1 == "RESULT" && $2 == b && $4 == m {print $3, $5}' "$tsv"
}
join3() { # three "backend value" files → "backend v1 v2 v3"
    awk 'FNR == 1 {f++} {v[f, $1] = $2; if (f == 1) order[n++] = $1}
         END {for (i = 0; i < n; i++) { k = order[i]
              printf "%s %s %s %s\n", k, v[1, k], (v[2, k] == "" ? 0 : v[2, k]),
                     (v[3, k] == "" ? 0 : v[3, k]) }}' "$@"
}
pick cycle "library cycles/s" >"$dat/a"
pick cycle "baseline cycles/s" >"$dat/b"
pick cycle "bare round trips cycles/s" >"$dat/c"
join3 "$dat/a" "$dat/b" "$dat/c" >"$dat/cycle.dat"
pick autosave "CPU % of one core, steady" >"$dat/a"
pick autosave "raw backend CPU % for the same saves" >"$dat/b"
pick autosave "CPU % of one core, first period after loading" >"$dat/c"
join3 "$dat/a" "$dat/b" "$dat/c" >"$dat/autosave.dat"
pick memory "Data tree per profile" >"$dat/a"
pick memory "bookkeeping per profile" >"$dat/b"
pick memory "RSS per active profile" >"$dat/c"
join3 "$dat/a" "$dat/b" "$dat/c" >"$dat/memory.dat"
pick contention "ForceLoad → held, owner alive: max" >"$dat/a"
pick contention "ForceLoad → held, owner killed: max" >"$dat/b"
pick contention "ForceLoad → held, owner alive: median" >"$dat/c"
join3 "$dat/a" "$dat/b" "$dat/c" >"$dat/handoff.dat"
ref_alive=$(awk -F'\t' '$1 == "RESULT" && $4 ~ /owner alive: max/ {sub(/<= ~/, "", $7); print $7; exit}' "$tsv")
ref_killed=$(awk -F'\t' '$1 == "RESULT" && $4 ~ /owner killed: max/ {sub(/<= ~/, "", $7); print $7; exit}' "$tsv")
: >"$dat/scale.dat"
for b in $(awk -F'\t' '$1 == "RESULT" && $2 == "scale" {print $3}' "$tsv" | uniq); do
    echo "# $b" >>"$dat/scale.dat"
    awk -F'\t' -v b="$b" '$1 == "RESULT" && $2 == "scale" && $3 == b {
        n = split($4, w, " ")
        if ($4 ~ /^load p50 @/) p50[w[n - 1]] = $5
        if ($4 ~ /^load p99 @/) p99[w[n - 1]] = $5
        if ($4 ~ /^raw load p50 @/) r50[w[n - 1]] = $5
        if ($4 ~ /^load p50 @/) order[k++] = w[n - 1] }
        END { for (i = 0; i < k; i++) { s = order[i]
              printf "%s %s %s %s\n", s, p50[s], p99[s], r50[s] } }' "$tsv" >>"$dat/scale.dat"
    printf '\n\n' >>"$dat/scale.dat"
done
scale_blocks=$(grep -c '^# ' "$dat/scale.dat")
scale_names=$(grep '^# ' "$dat/scale.dat" | cut -c3- | tr '\n' ' ')
if ! gnuplot -e "dat='$dat'; png='$out/bench.png'; nscale=$scale_blocks; \
        scalenames='$scale_names'; mode='$mode'; \
        ref_alive=${ref_alive:-0}; ref_killed=${ref_killed:-0}" "$here/plot.gp" 2>"$dat/gnuplot.log"; then
    echo "report.sh: gnuplot failed:" >&2
    cat "$dat/gnuplot.log" >&2
    exit 1
fi
rm -f "$dat/a" "$dat/b" "$dat/c" "$dat/gnuplot.log"
exit 0
