/*
 * bench_cycle — Question 1: what does the library cost over the work a
 * load → change Data → save → release cycle cannot avoid?
 *
 *   library   ps_store_load_profile, Data.Coins += 1, ps_profile_save,
 *             ps_profile_release; the cycle ends when the release is stored.
 *   baseline  the necessary work, on the host thread, through the same raw backend
 *             (same URL, so the same durability settings), same store, same keys:
 *             as many atomic updates as the counting wrapper shows the library
 *             doing (load, save, release = 3), each a read + compare-and-set of the
 *             same ~4 KB document, plus one JSON parse (at load) and one JSON
 *             serialize per write, with jansson and the library's flags.
 *   bare      the same 3 round trips writing pre-encoded bytes: no JSON at all.
 *
 * Cycles run one at a time. Round r of each kind works on key "cycle-r", so the
 * library's next load of that key waits in its per-key queue until the previous
 * release is stored, with no extra synchronisation by this program. Each round runs
 * the three kinds back to back, in an order that rotates from round to round, so
 * that machine noise (other builds, other fsyncs) hits all three alike; the ratios
 * printed are the medians of the per-round ratios, the rates the medians of the
 * per-round rates.
 *
 * Usage: bench_cycle URL [--smoke] [--rounds N] [--seconds S] [--only-library]
 * (--only-library: just the library's rounds, to run under perf or callgrind)
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE "bench-cycle"
#define ENCODE_FLAGS (JSON_COMPACT | JSON_SORT_KEYS) /* what src/document.c writes */

static long g_coins;

static const char *key_of(int i)
{
    static char key[32];
    snprintf(key, sizeof key, "cycle-%d", i);
    return key;
}

/* ---- the library ------------------------------------------------------------------- */

typedef struct library {
    ps_service *service;
    ps_profile_store *store;
    bench_counts counts;
    long expected_updates;
} library;

static void library_cycle(library *lib, const char *key)
{
    ps_profile *p = NULL;
    BENCH_OK(ps_store_load_profile(&p, lib->store, key, NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(++g_coins));
    BENCH_OK(ps_profile_save(p));
    BENCH_OK(ps_profile_release(p));
    ps_profile_free(p);
    lib->expected_updates += 3;
}

/* Waits until the last release is stored (end of a library round). */
static void library_drain(library *lib)
{
    if (!bench_tick_until_updates(lib->service, &lib->counts, lib->expected_updates, 60))
        bench_die("library: the release save did not finish within 60 s");
}

/* ---- the baseline: necessary work through the raw backend -------------------------- */

typedef struct baseline {
    ps_backend *backend;
    json_t *doc;     /* the document held between load and release */
    double json_s;   /* time in json_loadb / json_dumps */
    double update_s; /* time inside the backend's update calls, JSON included */
    long parses, serializes, cycles;
} baseline;

static double g_t0;
static void json_begin(void)
{
    g_t0 = bench_now();
}
static void json_end(baseline *b)
{
    b->json_s += bench_now() - g_t0;
}

static int emit(ps_write *out, baseline *b)
{
    json_begin();
    out->doc.data = json_dumps(b->doc, ENCODE_FLAGS);
    json_end(b);
    b->serializes++;
    if (!out->doc.data)
        return PS_ENOMEM;
    out->doc.len = strlen(out->doc.data);
    return PS_OK;
}

static int base_load(ps_write *out, const ps_bytes *current, void *userdata)
{
    baseline *b = userdata;
    json_decref(b->doc);
    json_begin();
    b->doc = current ? json_loadb(current->data, current->len, 0, NULL) : NULL;
    json_end(b);
    b->parses++;
    if (!b->doc)
        return PS_ECORRUPT;
    json_t *meta = json_object_get(b->doc, "MetaData");
    json_int_t count = json_integer_value(json_object_get(meta, "SessionLoadCount"));
    json_object_set_new(meta, "ActiveSession", json_pack("[is]", 0, "baseline"));
    json_object_set_new(meta, "SessionLoadCount", json_integer(count + 1));
    json_object_set_new(meta, "LastUpdate", json_integer(1700000000));
    return emit(out, b);
}

static int base_save(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    baseline *b = userdata;
    json_object_set_new(json_object_get(b->doc, "MetaData"), "LastUpdate",
                        json_integer(1700000001));
    return emit(out, b);
}

static int base_release(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    baseline *b = userdata;
    json_object_del(json_object_get(b->doc, "MetaData"), "ActiveSession");
    return emit(out, b);
}

static void baseline_cycle(baseline *b, const char *key)
{
    double t0 = bench_now();
    BENCH_OK(b->backend->update(b->backend, STORE, key, base_load, b));
    double t1 = bench_now();
    json_object_set_new(json_object_get(b->doc, "Data"), "Coins",
                        json_integer(++g_coins));
    BENCH_OK(b->backend->update(b->backend, STORE, key, base_save, b));
    BENCH_OK(b->backend->update(b->backend, STORE, key, base_release, b));
    b->update_s += bench_now() - t1 + (t1 - t0);
    b->cycles++;
    json_decref(b->doc);
    b->doc = NULL;
}

/* ---- bare round trips -------------------------------------------------------------- */

typedef struct bare {
    ps_backend *backend;
    char *doc;
    size_t len;
} bare;

static int bare_write(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    bare *b = userdata;
    return ps_bytes_set(&out->doc, b->doc, b->len);
}

static void bare_cycle(bare *b, const char *key)
{
    for (int i = 0; i < 3; i++)
        BENCH_OK(b->backend->update(b->backend, STORE, key, bare_write, b));
}

/* ---- rounds ------------------------------------------------------------------------ */

typedef enum { LIB, BASE, BARE } who;

typedef struct bench {
    library lib;
    baseline base;
    bare bare;
} bench;

/* Runs cycles on @p key for @p seconds. @return cycles per second. */
static double run_round(bench *b, who w, const char *key, double seconds, double *busy)
{
    long n = 0;
    double t0 = bench_now(), t;
    do {
        if (w == LIB)
            library_cycle(&b->lib, key);
        else if (w == BASE)
            baseline_cycle(&b->base, key);
        else
            bare_cycle(&b->bare, key);
        n++;
        t = bench_now();
    } while (t - t0 < seconds);
    if (w == LIB) {
        library_drain(&b->lib);
        t = bench_now();
    }
    *busy += t - t0;
    return (double)n / (t - t0);
}

static void setup(bench *b, const bench_args *args, int keys)
{
    bench_counts_init(&b->lib.counts);
    b->lib.service = bench_service_new(args->url, &b->lib.counts, NULL);
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 1);
    BENCH_OK(ps_service_get_profile_store(&b->lib.store, b->lib.service, STORE, data));
    BENCH_OK(ps_backend_open(&b->base.backend, args->url));
    b->bare.backend = b->base.backend;
    /* Create every key through the library once (not timed). */
    for (int i = 0; i < keys; i++)
        library_cycle(&b->lib, key_of(i));
    library_drain(&b->lib);
    ps_bytes bytes = {NULL, 0};
    BENCH_OK(b->base.backend->get(&bytes, b->base.backend, STORE, key_of(0)));
    b->bare.doc = bytes.data;
    b->bare.len = bytes.len;
    printf("document: %zu bytes stored (Data %zu bytes)\n", bytes.len,
           json_dumpb(data, NULL, 0, JSON_COMPACT));
    json_decref(data);
}

static const char *verdict(int met)
{
    return met ? "met" : "MISSED";
}

int main(int argc, char **argv)
{
    bench_args args;
    bench_parse_args(&args, argc, argv, "[--rounds N] [--seconds S] [--only-library]");
    int rounds = (int)bench_opt(&args, "--rounds", args.smoke ? 2 : 15);
    double seconds = bench_opt(&args, "--seconds", args.smoke ? 0.15 : 0.6);
    if (rounds < 1 || rounds > 64)
        bench_die("--rounds must be 1..64");
    printf("bench_cycle on %s: %d rounds of %.1f s each for library, baseline, bare\n",
           args.label, rounds, seconds);

    static bench b;
    setup(&b, &args, rounds);
    long updates0 = atomic_load(&b.lib.counts.updates);
    long gets0 = atomic_load(&b.lib.counts.gets);
    long transforms0 = atomic_load(&b.lib.counts.transforms);
    long long tns0 = atomic_load(&b.lib.counts.transform_ns);
    long long uns0 = atomic_load(&b.lib.counts.update_ns);
    double lib[64], base[64], bare_[64], lib_busy = 0, base_busy = 0, bare_busy = 0;
    double ratio_base[64], ratio_bare[64];
    long lib_cycles = 0;
    int only_library = bench_flag(&args, "--only-library");
    static const who orders[3][3] = {
        {LIB, BASE, BARE}, {BASE, BARE, LIB}, {BARE, LIB, BASE}};
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            who w = only_library ? LIB : orders[r % 3][k];
            if (w == LIB) {
                long before = b.lib.expected_updates;
                lib[r] = run_round(&b, LIB, key_of(r), seconds, &lib_busy);
                lib_cycles += (b.lib.expected_updates - before) / 3;
            } else if (w == BASE) {
                base[r] = run_round(&b, BASE, key_of(r), seconds, &base_busy);
            } else {
                bare_[r] = run_round(&b, BARE, key_of(r), seconds, &bare_busy);
            }
            if (only_library)
                break;
        }
        if (only_library) {
            printf("round %d: library %.0f/s\n", r + 1, lib[r]);
            continue;
        }
        ratio_base[r] = lib[r] / base[r];
        ratio_bare[r] = lib[r] / bare_[r];
        printf("round %2d: library %8.0f/s  baseline %8.0f/s  bare %10.0f/s  "
               "library/baseline %.3f\n",
               r + 1, lib[r], base[r], bare_[r], ratio_base[r]);
    }
    if (only_library) {
        ps_service_free(b.lib.service);
        return 0;
    }
    long updates = atomic_load(&b.lib.counts.updates) - updates0;
    long gets = atomic_load(&b.lib.counts.gets) - gets0;
    long transforms = atomic_load(&b.lib.counts.transforms) - transforms0;
    double transform_s = (double)(atomic_load(&b.lib.counts.transform_ns) - tns0) / 1e9;
    double update_s = (double)(atomic_load(&b.lib.counts.update_ns) - uns0) / 1e9;
    /* Where a cycle's time goes: inside the backend's updates (round trips and the
     * transforms' JSON), and outside them (host work and thread hand-offs). */
    double lib_us = 1e6 * lib_busy / (double)lib_cycles;
    double lib_in_us = 1e6 * update_s / (double)lib_cycles;
    double base_us = 1e6 * base_busy / (double)b.base.cycles;
    double base_in_us = 1e6 * b.base.update_s / (double)b.base.cycles;

    double l = bench_median(lib, (size_t)rounds), s = bench_median(base, (size_t)rounds);
    double r = bench_median(bare_, (size_t)rounds);
    double json_share = b.base.json_s / base_busy;
    double ratio = bench_median(ratio_base, (size_t)rounds);
    double ratio_bare_med = bench_median(ratio_bare, (size_t)rounds);
    printf("\nper library cycle: %.2f updates, %.2f gets, %.2f transform calls "
           "(baseline: 3 updates, 0 gets)\n",
           (double)updates / (double)lib_cycles, (double)gets / (double)lib_cycles,
           (double)transforms / (double)lib_cycles);
    printf("baseline JSON: %ld parses, %ld serializes\n", b.base.parses,
           b.base.serializes);
    printf(
        "library  %10.1f cycles/s\nbaseline %10.1f cycles/s\nbare     %10.1f cycles/s\n",
        l, s, r);
    printf("library / baseline = %.3f (target >= 0.9: %s)\n", ratio,
           verdict(ratio >= 0.9));
    printf("library / bare     = %.3f\n", ratio_bare_med);
    printf("JSON share of the baseline's time: %.1f %%\n", 100 * json_share);
    printf("library transform share (decode + validate + encode on workers): %.1f %%\n",
           100 * transform_s / lib_busy);
    double lib_json_us = 1e6 * transform_s / (double)lib_cycles;
    double base_json_us = 1e6 * b.base.json_s / (double)b.base.cycles;
    printf(
        "per cycle: library %.0f us = %.0f us inside backend updates (%.0f us of it in "
        "transforms: JSON) + %.0f us outside (host work, thread hand-offs)\n",
        lib_us, lib_in_us, lib_json_us, lib_us - lib_in_us);
    printf("           baseline %.0f us = %.0f us inside backend updates (%.0f us of it "
           "JSON) + %.0f us outside\n",
           base_us, base_in_us, base_json_us, base_us - base_in_us);

    bench_result("cycle", args.label, "library cycles/s", l, "1/s", "", "");
    bench_result("cycle", args.label, "baseline cycles/s", s, "1/s", "", "");
    bench_result("cycle", args.label, "bare round trips cycles/s", r, "1/s", "", "");
    bench_result("cycle", args.label, "library / baseline", ratio, "x", ">= 0.9",
                 verdict(ratio >= 0.9));
    bench_result("cycle", args.label, "library / bare round trips", ratio_bare_med, "x",
                 "", "");
    bench_result("cycle", args.label, "JSON share of baseline time", 100 * json_share,
                 "%", "", "");
    bench_result("cycle", args.label, "library transform share of time",
                 100 * transform_s / lib_busy, "%", "", "");
    bench_result("cycle", args.label, "library us per cycle inside backend updates",
                 lib_in_us, "us", "", "");
    bench_result("cycle", args.label,
                 "library us per cycle outside updates (host, hand-offs)",
                 lib_us - lib_in_us, "us", "", "");
    bench_result("cycle", args.label, "library us per cycle in transforms (JSON)",
                 lib_json_us, "us", "", "");
    bench_result("cycle", args.label, "baseline us per cycle inside updates", base_in_us,
                 "us", "", "");
    bench_result("cycle", args.label, "baseline us per cycle in JSON", base_json_us, "us",
                 "", "");
    bench_result("cycle", args.label, "updates per library cycle",
                 (double)updates / (double)lib_cycles, "", "3", "");

    ps_service_free(b.lib.service);
    ps_backend_free(b.base.backend);
    free(b.bare.doc);
    bench_counts_dispose(&b.lib.counts);
    return 0;
}
