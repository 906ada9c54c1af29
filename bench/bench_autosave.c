/*
 * bench_autosave — Question 3: what does auto-saving cost a server holding many
 * active profiles?
 *
 * One service loads N profiles (default 10,000, ~4 KB each; the template is the 4 KB
 * Data, so loading creates them), then the host ticks at 60 Hz (ps_service_update,
 * like Roblox's Heartbeat) with the default 30 s auto-save period. CPU time is
 * getrusage(RUSAGE_SELF): user + system of every thread of the process (host,
 * workers, SQLite; for PostgreSQL the server's own CPU is not included).
 *
 *   young   the first period after the mass load: no profile is due yet
 *   steady  the next --seconds (default 60 s): every profile is saved once per period
 *
 * The raw backend in the same run: the necessary work of each save — serialize the
 * held document tree with jansson and one atomic update through a raw backend handle
 * — done at the same rate by a 60 Hz host loop (--raw-seconds, default 20 s), timed
 * in CPU seconds per save and scaled to the saves the library made per minute.
 *
 * Usage: bench_autosave URL [--smoke] [--profiles N] [--period S] [--seconds S]
 *        [--raw-seconds S]
 *        [--shutdown]   (release everything at the end; default: just exit)
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORE "bench-autosave"
#define TICK (1.0 / 60.0)

typedef struct loader {
    ps_profile **profiles;
    long done, failed;
} loader;

static void loaded(int status, ps_profile *profile, void *userdata)
{
    loader *l = userdata;
    if (status == PS_OK)
        l->profiles[l->done] = profile;
    else
        l->failed++;
    l->done++;
}

static const char *key_of(long i)
{
    static char key[32];
    snprintf(key, sizeof key, "as-%ld", i);
    return key;
}

/* Ticks at 60 Hz for @p seconds. @return CPU seconds used meanwhile. */
static double tick_for(ps_service *s, double seconds, double *wall)
{
    double cpu0 = bench_cpu(), t0 = bench_now(), next = t0;
    while (bench_now() - t0 < seconds) {
        BENCH_OK(ps_service_update(s));
        next += TICK;
        bench_sleep(next - bench_now());
    }
    *wall = bench_now() - t0;
    return bench_cpu() - cpu0;
}

/* ---- the raw backend: serialize + one update per save ------------------------------ */

typedef struct raw_save {
    json_t *doc;
} raw_save;

static int raw_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    raw_save *r = userdata;
    out->doc.data = json_dumps(r->doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (!out->doc.data)
        return PS_ENOMEM;
    out->doc.len = strlen(out->doc.data);
    return PS_OK;
}

/* The raw backend paced like the library: a 60 Hz host loop that, each tick, does
 * the saves due at @p per_second (serialize the held tree + one update, inline) on
 * @p keys existing keys, for @p seconds. @return CPU seconds per save. */
static double raw_paced(const char *url, double per_second, long keys, double seconds)
{
    ps_backend *b = NULL;
    BENCH_OK(ps_backend_open(&b, url));
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 3);
    size_t len = 0;
    char *text = bench_doc_encode(data, &len);
    raw_save r = {json_loadb(text, len, 0, NULL)};
    free(text);
    json_decref(data);
    for (long i = 0; i < keys; i++) /* created first, untimed: saves update rows */
        BENCH_OK(b->update(b, STORE "-raw", key_of(i), raw_transform, &r));
    double cpu0 = bench_cpu(), t0 = bench_now(), next = t0, owed = 0;
    long saves = 0;
    while (bench_now() - t0 < seconds) {
        owed += per_second * TICK;
        for (; owed >= 1; owed -= 1, saves++)
            BENCH_OK(b->update(b, STORE "-raw", key_of(saves % keys), raw_transform, &r));
        next += TICK;
        bench_sleep(next - bench_now());
    }
    double cpu = bench_cpu() - cpu0;
    json_decref(r.doc);
    ps_backend_free(b);
    return cpu / (double)saves;
}

int main(int argc, char **argv)
{
    bench_args args;
    bench_parse_args(&args, argc, argv, "[--profiles N] [--period S] [--seconds S]");
    long n = (long)bench_opt(&args, "--profiles", args.smoke ? 200 : 10000);
    double period = bench_opt(&args, "--period", args.smoke ? 1 : 30);
    double seconds = bench_opt(&args, "--seconds", args.smoke ? 2 : 60);
    printf("bench_autosave on %s: %ld profiles, auto-save period %.0f s, steady window "
           "%.0f s, 60 Hz ticks\n",
           args.label, n, period, seconds);

    bench_counts counts;
    bench_counts_init(&counts);
    ps_config config;
    ps_config_init(&config);
    config.auto_save_period = period;
    ps_service *s = bench_service_new(args.url, &counts, &config);
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 3);
    ps_profile_store *store = NULL;
    BENCH_OK(ps_service_get_profile_store(&store, s, STORE, data));
    json_decref(data);

    loader l = {calloc((size_t)n, sizeof(ps_profile *)), 0, 0};
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        BENCH_OK(ps_store_load_profile_async(store, key_of(i), NULL, loaded, &l));
        if (i % 64 == 63) /* keep the queues short while submitting */
            BENCH_OK(ps_service_update(s));
    }
    while (l.done < n) {
        BENCH_OK(ps_service_update(s));
        bench_counts_wait(&counts, atomic_load(&counts.updates) + 1, 0.01);
    }
    if (l.failed)
        bench_die("%ld loads failed", l.failed);
    printf("loaded %ld profiles in %.1f s\n", n, bench_now() - t0);

    long u0 = atomic_load(&counts.updates);
    double young_wall, steady_wall;
    double young_cpu = tick_for(s, period, &young_wall);
    long u1 = atomic_load(&counts.updates);
    double steady_cpu = tick_for(s, seconds, &steady_wall);
    long u2 = atomic_load(&counts.updates);
    double young_pct = 100 * young_cpu / young_wall;
    double steady_pct = 100 * steady_cpu / steady_wall;
    double saves_per_min = (double)(u2 - u1) * 60 / steady_wall;
    printf("first period after loading (%.0f s): %ld saves, CPU %.2f s = %.2f %% of a "
           "core\n",
           young_wall, u1 - u0, young_cpu, young_pct);
    printf("steady (%.0f s):  %ld saves (%.0f per minute), CPU %.2f s = %.2f %% of a core"
           "\n",
           steady_wall, u2 - u1, saves_per_min, steady_cpu, steady_pct);
    if (atomic_load(&counts.failures))
        printf("warning: %ld failed backend updates\n", atomic_load(&counts.failures));

    double raw_s = bench_opt(&args, "--raw-seconds", args.smoke ? 1 : 20);
    double raw = raw_paced(args.url, saves_per_min / 60, n < 2000 ? n : 2000, raw_s);
    double raw_pct = 100 * raw * saves_per_min / 60;
    printf("raw backend, paced the same (%.0f s of 60 Hz ticks): %.1f us CPU per save "
           "(serialize + update) -> %.2f %% of a core at %.0f saves per minute\n",
           raw_s, raw * 1e6, raw_pct, saves_per_min);
    printf("library / raw CPU = %.2f\n", steady_pct / raw_pct);

    const char *v = steady_pct < 5 ? "met" : "MISSED";
    const char *target = strcmp(args.label, "memory") == 0 ? "" : "< 5";
    bench_result("autosave", args.label, "CPU % of one core, steady", steady_pct, "%",
                 target, *target ? v : "");
    bench_result("autosave", args.label, "CPU % of one core, first period after loading",
                 young_pct, "%", "", "");
    bench_result("autosave", args.label, "saves per minute", saves_per_min, "1/min", "",
                 "");
    bench_result("autosave", args.label, "raw backend CPU % for the same saves", raw_pct,
                 "%", "", "");
    bench_result("autosave", args.label, "library / raw CPU", steady_pct / raw_pct, "x",
                 "", "");
    bench_note("autosave", args.label,
               "%ld profiles of ~4 KB, period %.0f s, 60 Hz ticks,"
               " steady window %.0f s%s",
               n, period, steady_wall,
               strcmp(args.label, "postgres") == 0
                   ? "; PostgreSQL server CPU not included (RUSAGE_SELF)"
                   : "");

    if (!bench_flag(&args, "--shutdown")) {
        /* The store is thrown away: releasing 10,000 profiles would cost ~20 s of
         * synced SQLite commits and measure nothing asked here. */
        fflush(stdout);
        _exit(0);
    }
    for (long i = 0; i < n; i++)
        ps_profile_free(l.profiles[i]);
    t0 = bench_now();
    ps_service_free(s); /* releases all */
    printf("shutdown (releasing %ld) took %.1f s\n", n, bench_now() - t0);
    free(l.profiles);
    bench_counts_dispose(&counts);
    return 0;
}
