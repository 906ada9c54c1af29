/*
 * bench_writes — Question 2: how many backend round trips does each operation make?
 *
 * A counting wrapper over the backend vtable counts get and update calls (and the
 * transform calls inside updates, which would show CAS retries). The raw backend's
 * minimum for any write is one atomic update (read + compare-and-set) and no other
 * read, so the ratio printed is "library round trips / 1".
 *
 *   load       N profiles, blocking ps_store_load_profile
 *   auto-save  one auto-save period on a virtual clock (the library's injectable
 *              clock; nothing sleeps), every profile due; the before-save hook
 *              counts the saves, so "updates per auto-save" = updates / hook calls
 *   save       ps_profile_save on each profile
 *   view       ps_store_view_profile of each key (a read: one get, no update)
 *   release    ps_profile_release of each profile
 *
 * tests/test_round_trips.c asserts the same counts as a unit test.
 *
 * Usage: bench_writes URL [--smoke] [--profiles N]
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE "bench-writes"

/* ---- a virtual clock --------------------------------------------------------------- */

static pthread_mutex_t g_clock_lock = PTHREAD_MUTEX_INITIALIZER;
static double g_clock = 1700000000.0;

static double clock_now(void *userdata)
{
    (void)userdata;
    pthread_mutex_lock(&g_clock_lock);
    double now = g_clock;
    pthread_mutex_unlock(&g_clock_lock);
    return now;
}

static void clock_advance(double seconds, void *userdata)
{
    (void)userdata;
    pthread_mutex_lock(&g_clock_lock);
    g_clock += seconds;
    pthread_mutex_unlock(&g_clock_lock);
}

/* ---- counting ---------------------------------------------------------------------- */

typedef struct snapshot {
    long gets, updates, writes, transforms, others;
} snapshot;

static snapshot take(bench_counts *c)
{
    return (snapshot){atomic_load(&c->gets), atomic_load(&c->updates),
                      atomic_load(&c->writes), atomic_load(&c->transforms),
                      atomic_load(&c->others)};
}

static int g_failed; /* operations whose round trips were off the minimum */
static long g_saves; /* before-save hook calls: one per save the library starts */

static int count_save(ps_profile *profile, void *userdata)
{
    (void)profile;
    (void)userdata;
    g_saves++;
    return 0;
}

/* Prints and records the round trips of @p n operations of one kind. */
static void report(const char *label, const char *op, long n, snapshot a, snapshot b,
                   double want_updates, double want_gets)
{
    double updates = (double)(b.updates - a.updates) / (double)n;
    double gets = (double)(b.gets - a.gets) / (double)n;
    double tries = (double)(b.transforms - a.transforms) / (double)n;
    double writes = (double)(b.writes - a.writes) / (double)n;
    int ok = updates == want_updates && gets == want_gets && b.others == a.others;
    printf("%-10s x%-6ld updates/op %.3f  writes/op %.3f  transforms/op %.3f  gets/op "
           "%.3f  %s\n",
           op, n, updates, writes, tries, gets, ok ? "ok" : "UNEXPECTED");
    char metric[96];
    snprintf(metric, sizeof metric, "updates per %s", op);
    bench_result("writes", label, metric, updates, "", "", "");
    snprintf(metric, sizeof metric, "gets per %s", op);
    bench_result("writes", label, metric, gets, "", "", "");
    if (!ok)
        g_failed++;
}

/* ---- the run ----------------------------------------------------------------------- */

static const char *key_of(int i)
{
    static char key[32];
    snprintf(key, sizeof key, "w-%d", i);
    return key;
}

/* Ticks until every save started so far (before-save hook calls since @p saves0, on
 * top of @p updates0 updates) is stored and no further one starts. */
static void settle_saves(ps_service *s, bench_counts *c, long updates0, long saves0)
{
    for (;;) {
        long target = updates0 + (g_saves - saves0);
        if (!bench_tick_until_updates(s, c, target, 60))
            bench_die("saves did not finish");
        bench_sleep(0.02);
        BENCH_OK(ps_service_update(s));
        if (updates0 + (g_saves - saves0) == target && atomic_load(&c->updates) == target)
            return;
    }
}

/* Advances the virtual clock by @p seconds in @p steps ticks. */
static void advance_ticking(ps_service *s, double seconds, int steps)
{
    for (int i = 0; i < steps; i++) {
        clock_advance(seconds / steps, NULL);
        BENCH_OK(ps_service_update(s));
    }
}

int main(int argc, char **argv)
{
    bench_args args;
    bench_parse_args(&args, argc, argv, "[--profiles N]");
    int n = (int)bench_opt(&args, "--profiles", args.smoke ? 20 : 200);
    printf("bench_writes on %s: %d profiles\n", args.label, n);

    bench_counts counts;
    bench_counts_init(&counts);
    ps_config config;
    ps_config_init(&config);
    config.clock = clock_now;
    config.sleep = clock_advance;
    ps_service *s = bench_service_new(args.url, &counts, &config);
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 2);
    ps_profile_store *store = NULL;
    BENCH_OK(ps_service_get_profile_store(&store, s, STORE, data));
    json_decref(data);
    ps_profile **profiles = calloc((size_t)n, sizeof *profiles);

    snapshot a = take(&counts);
    for (int i = 0; i < n; i++)
        BENCH_OK(ps_store_load_profile(&profiles[i], store, key_of(i), NULL, NULL));
    snapshot b = take(&counts);
    report(args.label, "load", n, a, b, 1, 0);

    /* Auto-save: every profile becomes due one period after its load; in the next
     * period about one is saved per period/n. */
    for (int i = 0; i < n; i++) {
        json_object_set_new(ps_profile_data(profiles[i]), "Coins", json_integer(i));
        BENCH_OK(ps_profile_set_before_save(profiles[i], count_save, NULL));
    }
    advance_ticking(s, config.auto_save_period, 10);
    settle_saves(s, &counts, b.updates, 0);
    a = take(&counts);
    long saves0 = g_saves;
    advance_ticking(s, config.auto_save_period, 4 * n);
    settle_saves(s, &counts, a.updates, saves0);
    long saves = g_saves - saves0;
    b = take(&counts);
    printf("auto-saves started in one period: %ld for %d profiles\n", saves, n);
    report(args.label, "auto-save", saves, a, b, 1, 0);

    a = take(&counts);
    for (int i = 0; i < n; i++)
        BENCH_OK(ps_profile_save(profiles[i]));
    if (!bench_tick_until_updates(s, &counts, a.updates + n, 60))
        bench_die("saves did not finish");
    b = take(&counts);
    report(args.label, "save", n, a, b, 1, 0);

    a = take(&counts);
    for (int i = 0; i < n; i++) {
        ps_profile *view = NULL;
        BENCH_OK(ps_store_view_profile(&view, store, key_of(i)));
        ps_profile_free(view);
    }
    b = take(&counts);
    report(args.label, "view", n, a, b, 0, 1);

    a = take(&counts);
    for (int i = 0; i < n; i++) {
        BENCH_OK(ps_profile_release(profiles[i]));
        ps_profile_free(profiles[i]);
    }
    if (!bench_tick_until_updates(s, &counts, a.updates + n, 60))
        bench_die("releases did not finish");
    b = take(&counts);
    report(args.label, "release", n, a, b, 1, 0);

    a = take(&counts);
    ps_service_free(s);
    b = take(&counts);
    printf("shutdown with nothing active: %ld updates, %ld gets\n", b.updates - a.updates,
           b.gets - a.gets);
    g_failed += b.updates != a.updates || b.gets != a.gets;
    bench_result("writes", args.label,
                 "operation kinds off the minimum (load, auto-save, save, release: 1 "
                 "update and no get each; view: 1 get; idle shutdown: nothing)",
                 g_failed, "", "= 0", g_failed == 0 ? "met" : "MISSED");
    free(profiles);
    bench_counts_dispose(&counts);
    return g_failed != 0;
}
