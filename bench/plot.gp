# bench/plot.gp — the plot of bench/results, called by report.sh with dat, png, nscale,
# scalenames, mode, ref_alive and ref_killed set. One panel per measured question.
set terminal pngcairo size 1800,1000 font ",10"
set output png
set multiplot layout 2,3 title sprintf("profileservice benchmarks (%s run)", mode)
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key below
set grid ytics

set title "1. load → change Data → save → release (log scale)"
set logscale y
set ylabel "cycles per second"
set yrange [*:*]
plot dat."/cycle.dat" using 2:xtic(1) title "library", \
     "" using 3 title "baseline (necessary work)", \
     "" using 4 title "bare round trips (no JSON)"
unset logscale y

set title "3. auto-save CPU (10,000 profiles, 30 s period in the full run)"
set ylabel "% of one core"
set yrange [0:*]
plot dat."/autosave.dat" using 2:xtic(1) title "library, steady", \
     "" using 4 title "library, first period after loading", \
     "" using 3 title "raw: serialize + update, same saves", \
     5 with lines lw 2 dt 2 lc rgb "red" title "target 5 %"

set title "4. heap per active profile"
set ylabel "bytes"
set style histogram rowstacked
set boxwidth 0.5
set yrange [0:*]
plot dat."/memory.dat" using 2:xtic(1) title "Data tree (jansson)", \
     "" using 3 title "library bookkeeping"
set style histogram clustered gap 1
set boxwidth 0.9
set key top left

set title "5. load latency against stored profiles"
set style data linespoints
set logscale x
set logscale y
set xlabel "stored profiles"
set ylabel "ms (log)"
set yrange [*:*]
plot for [i=0:nscale-1] dat."/scale.dat" index i using 1:2 lw 2 lc i+1 pt 7 \
         title word(scalenames, i+1)." p50", \
     for [i=0:nscale-1] dat."/scale.dat" index i using 1:3 dt 2 lc i+1 pt 6 \
         title word(scalenames, i+1)." p99", \
     for [i=0:nscale-1] dat."/scale.dat" index i using 1:4 dt 3 lc i+1 pt 1 \
         title word(scalenames, i+1)." raw p50"
unset logscale x
unset logscale y
unset xlabel

set key below
set title "6. ForceLoad → holding the profile"
set style data histograms
set ylabel "seconds"
set yrange [0:*]
plot dat."/handoff.dat" using 4:xtic(1) title "owner alive: median", \
     "" using 2 title "owner alive: max", \
     "" using 3 title "owner killed: max", \
     ref_alive with lines lw 2 dt 2 lc rgb "dark-green" title "ProfileService ≈ alive max", \
     ref_killed with lines lw 2 dt 2 lc rgb "red" title "ProfileService ≈ killed max"
unset multiplot
