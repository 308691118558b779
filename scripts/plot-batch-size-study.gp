# Plots the batch-size study written by the batch-size-study example: reads runs.csv and
# curves.csv from a directory and writes accuracy, steps_to_target, sharpness and noise_scale,
# each as .png (800x500) and .svg, into that same directory.
#
#   gnuplot -e "dir='docs/batch_size_study'" scripts/plot-batch-size-study.gp
#
# Optional: -e "target=0.85" puts the target accuracy into the steps-to-target title.
# Needs gnuplot >= 5.4 (set datafile columnheaders, keyentry); Debian's gnuplot-nox has the
# pngcairo and svg terminals used here. Columns are looked up by header name, so their order
# does not matter, and rows may come in any order (each fixed-run series is sorted by batch size).

if (!exists("dir")) dir = "docs/batch_size_study"
runs   = dir . "/runs.csv"
curves = dir . "/curves.csv"

set datafile separator ","
set datafile columnheaders     # first row is the header: skipped, and its names work in column()
# Rows filtered out below evaluate to NaN. Treated as missing (not undefined), they are dropped
# without breaking a series' line, so the runs of one series need not be adjacent in the file.
# A row whose value reads as "nan" (e.g. a run that never reached the target) is dropped too.
set datafile missing NaN

# True when a field holds a number: not empty, not nan/-nan/NaN/inf (the only spellings with an n).
isnum(s) = s ne "" && !strstrt(s, "n") && !strstrt(s, "N")
# True when column c of this row can be plotted: a number, and positive when ylog is set.
usable(c) = isnum(strcol(c)) && (!ylog || column(c) > 0)
yvalue(c) = usable(c) ? column(c) : NaN

# The six fixed-batch series: learning-rate scaling (colour) x batch norm (solid line, open
# points / dashed line, filled points).
SC = "none linear sqrt none linear sqrt"
BN = "0 0 0 1 1 1"
bntitle(b) = b ? "batch norm" : "no batch norm"
is_fixed(s, b) = strcol("kind") eq "fixed" && strcol("scaling") eq s && int(column("batch_norm")) == b
fixedtitle(i) = (word(SC, i) eq "none" ? "no LR" : word(SC, i) . " LR") . " scaling"

# The adaptive and ramp runs: a horizontal reference line at their value (the mean, should a
# kind have several runs), with a marker at their starting batch size.
KINDS = "adaptive adaptive ramp ramp"
KBN   = "0 1 0 1"
is_kind(k, b) = strcol("kind") eq k && int(column("batch_norm")) == b
is_kind_j(j) = is_kind(word(KINDS, j), int(word(KBN, j)))
array have_kind[4]
array start_size[4]
array kind_value[4]
do for [j = 1:4] {
    stats [*:*][*:*] runs using (is_kind_j(j) ? 1 : 0):(is_kind_j(j) ? column("batch_size") : 0) nooutput name "SK"
    have_kind[j] = SK_sum_x > 0
    start_size[j] = int(SK_max_y)
}
kindtitle(j) = word(KINDS, j) . ", " . bntitle(int(word(KBN, j)))
# KV lists the kinds with a value to draw, KN the present ones without (key entry only). gnuplot
# reads a plot clause once even when its iteration is empty, hence the guards in kv, kn and titles.
kv(k) = int(word(KV . " 1", k))
kn(k) = int(word(KN . " 1", k))

set style line 1 lc rgb "#0072B2" lw 2 dt 1 pt 6 ps 1.1
set style line 2 lc rgb "#D55E00" lw 2 dt 1 pt 4 ps 1.1
set style line 3 lc rgb "#009E73" lw 2 dt 1 pt 8 ps 1.1
set style line 4 lc rgb "#0072B2" lw 2 dt 2 pt 7 ps 1.1
set style line 5 lc rgb "#D55E00" lw 2 dt 2 pt 5 ps 1.1
set style line 6 lc rgb "#009E73" lw 2 dt 2 pt 9 ps 1.1
set style line 11 lc rgb "black"   lw 1.5 dt (2,3)       pt 12 ps 1.8
set style line 12 lc rgb "black"   lw 1.5 dt (8,3,2,3)   pt 13 ps 1.8
set style line 13 lc rgb "#CC79A7" lw 1.5 dt (2,3)       pt 10 ps 1.8
set style line 14 lc rgb "#CC79A7" lw 1.5 dt (8,3,2,3)   pt 11 ps 1.8

# Before each runs.csv plot (ycol names the y column, ylog says whether y is logarithmic):
# counts the fixed runs with a usable value into nfixed (a plot with no point at all on an
# autoscaled axis would stop gnuplot) and fills kind_value, KV and KN.
PREPARE_RUNS = 'stats [*:*][*:*] runs using ((strcol("kind") eq "fixed" && usable(ycol)) ? 1 : 0) nooutput name "SF"; ' . \
    'nfixed = SF_sum; KV = ""; KN = ""; ' . \
    'do for [j = 1:4] { if (have_kind[j]) { ' . \
    '    stats [*:*][*:*] runs using ((is_kind_j(j) && usable(ycol)) ? 1 : 0):((is_kind_j(j) && usable(ycol)) ? column(ycol) : 0) nooutput name "SK"; ' . \
    '    kind_value[j] = (SK_sum_x > 0) ? SK_sum_y / SK_sum_x : NaN; ' . \
    '    if (SK_sum_x > 0) { KV = KV . " " . j } else { KN = KN . " " . j } } }; ' . \
    'if (nfixed == 0) { ylo = ylog ? 1 : 0; set yrange [ylo : 10 * ylo + 1]; set label 1 nodata at graph 0.5, 0.5 center } else { set autoscale y; unset label 1 }'
# The key below the plot has four rows: a column for the runs without batch norm, one for those
# with it (each under a heading entry), and one for adaptive/ramp.
FIXED_RUNS = 'runs using (is_fixed(word(SC, i), int(word(BN, i))) ? column("batch_size") : NaN):(yvalue(ycol)) smooth unique with linespoints ls i title fixedtitle(i)'
PLOT_RUNS = 'plot keyentry with points ps 0 title "without batch norm:", for [i = 1:3] ' . FIXED_RUNS . ', ' . \
    'keyentry with points ps 0 title "with batch norm:", for [i = 4:6] ' . FIXED_RUNS . ', ' . \
    'for [k = 1:words(KV)] kind_value[kv(k)] with lines ls 10 + kv(k) notitle, ' . \
    'for [k = 1:words(KV)] "+" using (start_size[kv(k)]):(kind_value[kv(k)]) every ::0::0 with linespoints ls 10 + kv(k) title (k <= words(KV) ? kindtitle(kv(k)) : ""), ' . \
    'for [k = 1:words(KN)] keyentry with linespoints ls 10 + kn(k) title (k <= words(KN) ? kindtitle(kn(k)) . novalue : "")'

set grid lt 1 lc rgb "#e4e4e4" lw 1 dt solid
set border lc rgb "#444444"
# The key sits below the plot, placed by hand: gnuplot's estimate of its width is too wide, and
# a centred key that overflows loses its first column.
set key at screen 0.08, screen 0.175 left top vertical maxrows 4 Left reverse samplen 3 spacing 1.1
set lmargin 10
set bmargin 8.5
set samples 50

do for [fmt in "png svg"] {
    if (fmt eq "png") {
        set terminal pngcairo size 800,500 font "Sans,10" noenhanced
    } else {
        set terminal svg size 800,500 font "Sans,10" background rgb "white" noenhanced
    }
    set logscale x 2
    set xrange [11:6000]
    set xtics 16, 2, 4096 format "%.0f"

    # --- a. final test accuracy against batch size ---------------------------------------
    set output dir . "/accuracy." . fmt
    set title "Test accuracy after training vs batch size" font ",12"
    set xlabel "batch size (adaptive, ramp: marker at their starting size)"
    set ylabel "test accuracy"
    unset logscale y
    set ytics autofreq format "% g"
    ycol = "test_accuracy"; ylog = 0; nodata = "no data"; novalue = ": no value"
    @PREPARE_RUNS
    set key width (words(KN) > 0 ? -strlen(novalue) : 0)
    @PLOT_RUNS

    # --- b. optimizer steps to the target accuracy, log-log --------------------------------
    set output dir . "/steps_to_target." . fmt
    if (exists("target")) {
        set title sprintf("Optimizer steps to reach test accuracy %g vs batch size", target) font ",12"
    } else {
        set title "Optimizer steps to reach the target test accuracy vs batch size" font ",12"
    }
    set xlabel "batch size (adaptive, ramp: marker at starting size; runs that never reached the target left out)"
    set ylabel "optimizer steps to target"
    set logscale y 10
    set ytics autofreq format "%.0f"
    ycol = "steps_to_target"; ylog = 1; nodata = "no run reached the target"; novalue = ": not reached"
    @PREPARE_RUNS
    set key width (words(KN) > 0 ? -strlen(novalue) : 0)
    @PLOT_RUNS

    # --- c. sharpness against batch size ---------------------------------------------------
    set output dir . "/sharpness." . fmt
    set title "Sharpness vs batch size" font ",12"
    set xlabel "batch size (adaptive, ramp: marker at their starting size)"
    set ylabel "sharpness"
    unset logscale y
    set ytics autofreq format "% g"
    ycol = "sharpness"; ylog = 0; nodata = "no data"; novalue = ": no value"
    @PREPARE_RUNS
    set key width (words(KN) > 0 ? -strlen(novalue) : 0)
    @PLOT_RUNS
}
unset label 1

# --- d. gradient noise scale during training (curves.csv) -----------------------------------
# Fixed batch sizes (no LR scaling, no batch norm) shade from green (small) to purple (large).
SIZES = "16 32 64 128 256 512 1024 2048 4096"
set palette defined (0 "#7AD151", 0.5 "#21918C", 1 "#440154")
unset colorbox
in_scen(s) = strcol("scenario") eq s
ylog = 1
stats [*:*][*:*] curves using (usable("noise_scale") ? 1 : 0) nooutput name "SN"

do for [fmt in "png svg"] {
    if (fmt eq "png") {
        set terminal pngcairo size 800,500 font "Sans,10" noenhanced
    } else {
        set terminal svg size 800,500 font "Sans,10" background rgb "white" noenhanced
    }
    set output dir . "/noise_scale." . fmt
    set title "Gradient noise scale during training (no LR scaling, no batch norm)" font ",12"
    set xlabel "training samples seen (millions)"
    set ylabel "gradient noise scale (samples)"
    unset logscale x
    set logscale y 10
    set xtics autofreq format "% g"
    set ytics autofreq format "%.0f"
    set key default
    set key outside right top vertical Left reverse samplen 3 spacing 1.15
    set bmargin
    if (SN_sum == 0) {
        set xrange [0:1]; set yrange [1:10]
        set label 1 "no noise-scale estimates in curves.csv" at graph 0.5, 0.5 center
    } else {
        set autoscale xy
    }
    plot for [i = 1:9] curves using (in_scen("fixed-" . word(SIZES, i) . "-none-bn0") ? column("samples_seen") / 1e6 : NaN):(yvalue("noise_scale")) \
             smooth unique with linespoints lc palette frac (i - 1) / 8.0 lw 1.5 pt 7 ps 0.5 title "fixed batch " . word(SIZES, i), \
         curves using (in_scen("adaptive-bn0") ? column("samples_seen") / 1e6 : NaN):(yvalue("noise_scale")) \
             smooth unique with linespoints lc rgb "black" lw 3 pt 13 ps 0.9 title "adaptive batch", \
         curves using (in_scen("ramp-bn0") ? column("samples_seen") / 1e6 : NaN):(yvalue("noise_scale")) \
             smooth unique with linespoints lc rgb "#CC79A7" lw 3 dt 2 pt 11 ps 0.9 title "batch-size ramp"
}
set output
