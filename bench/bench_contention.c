/*
 * bench_contention — Question 6: what happens when servers fight over profiles?
 *
 * Throughput: 8 servers (processes; threads with their own service for memory:,
 * which cannot be shared between processes) on one store, each looping over random
 * keys of a small shared set: ForceLoad (handler NULL), Data.Coins += 1, release.
 * A key another server holds makes the load ask for it and retry every
 * load_repeat_delay (7 s by default), so the throughput is governed by collisions.
 * The raw backend in the same run: 8 servers doing the same three atomic updates per
 * cycle (parse once, serialize per write) on the same number of keys, which never
 * wait because the raw backend has no session lock.
 *
 * Hand-off, with default settings: an owner server holds 64 profiles and keeps ticking
 * at 60 Hz; another owner holds 64 and is SIGKILLed (a thread that stops ticking for
 * memory:). 8 profiles of each are contested; the others keep the owner's auto-save
 * rhythm what it is on a server with players (ProfileService spaces saves by
 * period / profiles held, so an owner holding only the contested ones would save the
 * last of them ever more slowly as it hands the others over). A third server ForceLoads
 * the killed owner's profiles at once and the live owner's profiles one auto-save period
 * later (when every one of them is in its steady auto-save cycle), and records the time
 * from each call to holding the profile. ProfileService needs up to ≈ 37 s (next
 * auto-save + one retry) and ≈ 63 s (8 retry steps, then steal) for these.
 *
 * Usage: bench_contention URL [--smoke] [--phase throughput|handoff|both]
 *        [--seconds S] [--keys K] [--servers N]
 * --smoke scales the timing settings down (and says so).
 */
#include "bench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define STORE "bench-contention"
#define MAX_ACTORS 16
#define LAT_CAP 8192
#define HANDOFF_KEYS 8    /* contested profiles per owner */
#define OWNER_PROFILES 64 /* profiles each owner holds */
#define TICK (1.0 / 60.0)

typedef struct actor_result {
    long cycles, conflicts, failures, waited;
    int nlat;
    double lat[LAT_CAP];
    atomic_int ready;
    atomic_int frozen; /* memory: "killed" */
} actor_result;

/* Shared by every server: anonymous shared memory, so it works for processes too. */
typedef struct shared {
    _Atomic double start_at; /* CLOCK_MONOTONIC is system-wide */
    double seconds;
    int keys;
    actor_result actors[MAX_ACTORS];
} shared;

static shared *g;
static const char *g_url;
static ps_config g_config;
static json_t *g_data;
static int g_threads; /* memory: servers are threads */

/* ---- servers: processes, or threads for memory: ------------------------------------ */

typedef struct actor {
    pid_t pid;
    pthread_t tid;
} actor;

typedef struct actor_arg {
    int index;
} actor_arg;

static void actor_start(actor *a, void *(*fn)(void *), int index)
{
    static actor_arg args[MAX_ACTORS];
    args[index].index = index;
    if (g_threads) {
        if (pthread_create(&a->tid, NULL, fn, &args[index]))
            bench_die("cannot start a thread");
        return;
    }
    fflush(stdout);
    a->pid = fork();
    if (a->pid < 0)
        bench_die("fork failed");
    if (a->pid == 0) {
        srand((unsigned)getpid());
        fn(&args[index]);
        _exit(0);
    }
}

static void actor_join(actor *a)
{
    if (g_threads)
        pthread_join(a->tid, NULL);
    else
        waitpid(a->pid, NULL, 0);
}

/* A crash: SIGKILL for a process; a thread stops ticking forever (never released). */
static void actor_kill(actor *a, int index)
{
    if (g_threads) {
        atomic_store(&g->actors[index].frozen, 1);
        pthread_detach(a->tid);
        return;
    }
    kill(a->pid, SIGKILL);
    waitpid(a->pid, NULL, 0);
}

static ps_service *server_new(ps_profile_store **store)
{
    ps_service *s = bench_service_new(g_url, NULL, &g_config);
    BENCH_OK(ps_service_get_profile_store(store, s, STORE, g_data));
    return s;
}

static void wait_start(void)
{
    while (atomic_load(&g->start_at) == 0)
        bench_sleep(0.001);
    bench_sleep(atomic_load(&g->start_at) - bench_now());
}

/* ---- throughput -------------------------------------------------------------------- */

static void *library_server(void *arg)
{
    actor_result *r = &g->actors[((actor_arg *)arg)->index];
    ps_profile_store *store = NULL;
    ps_service *s = server_new(&store);
    atomic_store(&r->ready, 1);
    wait_start();
    double end = atomic_load(&g->start_at) + g->seconds;
    char key[32];
    while (bench_now() < end) {
        snprintf(key, sizeof key, "c-%d", rand() % g->keys);
        ps_profile *p = NULL;
        double t0 = bench_now();
        int rc = ps_store_load_profile(&p, store, key, NULL, NULL);
        double t = bench_now() - t0;
        if (rc == PS_ECONFLICT) { /* another server's force load took precedence */
            r->conflicts++;
            continue;
        }
        if (rc != PS_OK) {
            r->failures++;
            continue;
        }
        json_object_set_new(ps_profile_data(p), "Coins", json_integer(r->cycles));
        BENCH_OK(ps_profile_release(p));
        ps_profile_free(p);
        if (r->nlat < LAT_CAP)
            r->lat[r->nlat++] = t;
        if (t > g_config.load_repeat_delay / 2)
            r->waited++;
        r->cycles++;
    }
    ps_service_free(s); /* shutdown: the last release is stored */
    return NULL;
}

typedef struct raw_cycle {
    json_t *doc;
} raw_cycle;

static int raw_write(ps_write *out, raw_cycle *c)
{
    out->doc.data = json_dumps(c->doc, JSON_COMPACT | JSON_SORT_KEYS);
    out->doc.len = out->doc.data ? strlen(out->doc.data) : 0;
    return out->doc.data ? PS_OK : PS_ENOMEM;
}

static int raw_load(ps_write *out, const ps_bytes *current, void *userdata)
{
    raw_cycle *c = userdata;
    json_decref(c->doc);
    c->doc = current ? json_loadb(current->data, current->len, 0, NULL) : NULL;
    if (!c->doc) {
        size_t len = 0;
        char *text = bench_doc_encode(g_data, &len);
        c->doc = json_loadb(text, len, 0, NULL);
        free(text);
    }
    json_object_set_new(json_object_get(c->doc, "MetaData"), "ActiveSession",
                        json_pack("[is]", 0, "raw"));
    return raw_write(out, c);
}

static int raw_save(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    return raw_write(out, userdata);
}

static int raw_release(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    raw_cycle *c = userdata;
    json_object_del(json_object_get(c->doc, "MetaData"), "ActiveSession");
    return raw_write(out, c);
}

static void *raw_server(void *arg)
{
    actor_result *r = &g->actors[((actor_arg *)arg)->index];
    ps_backend *b = NULL;
    BENCH_OK(ps_backend_open(&b, g_url));
    raw_cycle c = {NULL};
    atomic_store(&r->ready, 1);
    wait_start();
    double end = atomic_load(&g->start_at) + g->seconds;
    char key[32];
    while (bench_now() < end) {
        snprintf(key, sizeof key, "c-%d", rand() % g->keys);
        double t0 = bench_now();
        BENCH_OK(b->update(b, STORE "-raw", key, raw_load, &c));
        double t = bench_now() - t0;
        json_object_set_new(json_object_get(c.doc, "Data"), "Coins",
                            json_integer(r->cycles));
        BENCH_OK(b->update(b, STORE "-raw", key, raw_save, &c));
        BENCH_OK(b->update(b, STORE "-raw", key, raw_release, &c));
        if (r->nlat < LAT_CAP)
            r->lat[r->nlat++] = t;
        r->cycles++;
    }
    json_decref(c.doc);
    ps_backend_free(b);
    return NULL;
}

typedef struct totals {
    long cycles, conflicts, failures, waited;
    double p50, p99, seconds;
} totals;

static totals run_servers(void *(*fn)(void *), int servers, double seconds)
{
    memset(g->actors, 0, sizeof g->actors);
    atomic_store(&g->start_at, 0);
    g->seconds = seconds;
    actor a[MAX_ACTORS];
    for (int i = 0; i < servers; i++)
        actor_start(&a[i], fn, i);
    for (int i = 0; i < servers; i++)
        while (!atomic_load(&g->actors[i].ready))
            bench_sleep(0.005);
    double t0 = bench_now() + 0.2;
    atomic_store(&g->start_at, t0);
    for (int i = 0; i < servers; i++)
        actor_join(&a[i]);
    totals t = {0};
    t.seconds = bench_now() - t0;
    double *lat = calloc((size_t)servers * LAT_CAP, sizeof *lat);
    size_t n = 0;
    for (int i = 0; i < servers; i++) {
        actor_result *r = &g->actors[i];
        t.cycles += r->cycles;
        t.conflicts += r->conflicts;
        t.failures += r->failures;
        t.waited += r->waited;
        memcpy(lat + n, r->lat, (size_t)r->nlat * sizeof *lat);
        n += (size_t)r->nlat;
    }
    t.p50 = bench_percentile(lat, n, 50);
    t.p99 = bench_percentile(lat, n, 99);
    free(lat);
    return t;
}

static void throughput(const bench_args *args, int servers, double seconds)
{
    printf("throughput: %d servers, %d shared keys, %.1f s, load_repeat_delay %.2g s\n",
           servers, g->keys, seconds, g_config.load_repeat_delay);
    totals lib = run_servers(library_server, servers, seconds);
    totals raw = run_servers(raw_server, servers, seconds);
    double lib_rate = (double)lib.cycles / lib.seconds;
    double raw_rate = (double)raw.cycles / raw.seconds;
    double waited = lib.cycles ? 100.0 * (double)lib.waited / (double)lib.cycles : 0;
    printf("library: %ld cycles in %.1f s = %.1f/s; load p50 %.1f ms p99 %.0f ms; %ld "
           "loads waited for a hand-off (%.1f %%), %ld lost to another force load, %ld "
           "failed\n",
           lib.cycles, lib.seconds, lib_rate, lib.p50 * 1e3, lib.p99 * 1e3, lib.waited,
           waited, lib.conflicts, lib.failures);
    printf(
        "raw:     %ld cycles in %.1f s = %.1f/s; first update p50 %.1f ms p99 %.1f ms\n",
        raw.cycles, raw.seconds, raw_rate, raw.p50 * 1e3, raw.p99 * 1e3);
    printf("library / raw = %.3f\n", lib_rate / raw_rate);
    bench_result("contention", args->label, "library cycles/s (8 servers)", lib_rate,
                 "1/s", "", "");
    bench_result("contention", args->label, "raw cycles/s (8 servers, no session lock)",
                 raw_rate, "1/s", "", "");
    bench_result("contention", args->label, "library / raw throughput",
                 lib_rate / raw_rate, "x", "", "");
    bench_result("contention", args->label, "load p50 under contention", lib.p50 * 1e3,
                 "ms", "", "");
    bench_result("contention", args->label, "load p99 under contention", lib.p99 * 1e3,
                 "ms", "", "");
    bench_result("contention", args->label, "loads that waited for a hand-off", waited,
                 "%", "", "");
    bench_note("contention", args->label,
               "throughput: %d servers (%s), %d shared keys, "
               "%.1f s, load_repeat_delay %.2g s; %ld loads lost to another server's "
               "force load, %ld failed",
               servers, g_threads ? "threads" : "processes", g->keys, seconds,
               g_config.load_repeat_delay, lib.conflicts, lib.failures);
}

/* ---- hand-off ---------------------------------------------------------------------- */

/* Contested profile @p i of an owner: spread over its auto-save list, so their saves
 * are spread over the period. */
#define CONTESTED(i) ((i) * (OWNER_PROFILES / HANDOFF_KEYS))

/* Owner: loads its profiles, then ticks at 60 Hz until it has lost the contested
 * ones (or is killed). */
static void *owner_server(void *arg)
{
    int index = ((actor_arg *)arg)->index;
    actor_result *r = &g->actors[index];
    ps_profile_store *store = NULL;
    ps_service *s = server_new(&store);
    ps_profile *p[OWNER_PROFILES];
    char key[32];
    for (int i = 0; i < OWNER_PROFILES; i++) {
        snprintf(key, sizeof key, "%s-%d", index == 0 ? "alive" : "killed", i);
        BENCH_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
    }
    atomic_store(&r->ready, 1);
    double deadline =
        bench_now() + 20 * g_config.load_repeat_delay + 4 * g_config.auto_save_period;
    for (;;) {
        if (atomic_load(&r->frozen))
            for (;;)
                bench_sleep(3600); /* a crashed server: never ticks again */
        BENCH_OK(ps_service_update(s));
        int active = 0;
        for (int i = 0; i < HANDOFF_KEYS; i++)
            active += ps_profile_is_active(p[CONTESTED(i)]);
        if (active == 0 || bench_now() > deadline)
            break;
        bench_sleep(TICK);
    }
    for (int i = 0; i < OWNER_PROFILES; i++)
        ps_profile_free(p[i]);
    ps_service_free(s);
    return NULL;
}

typedef struct pending {
    double called, held;
    int status;
    ps_profile *profile;
} pending;

static void force_loaded(int status, ps_profile *profile, void *userdata)
{
    pending *p = userdata;
    p->held = bench_now();
    p->status = status;
    p->profile = profile;
}

static void handoff_report(const bench_args *args, const char *who, pending *p,
                           double reference)
{
    double t[HANDOFF_KEYS];
    int ok = 0;
    printf("%s owner, seconds from ForceLoad to held, per profile:", who);
    for (int i = 0; i < HANDOFF_KEYS; i++) {
        if (p[i].status == PS_OK)
            t[ok++] = p[i].held - p[i].called;
        printf(" %.1f%s", p[i].held - p[i].called,
               p[i].status == PS_OK ? "" : "(failed)");
    }
    printf("\n");
    if (ok == 0) {
        printf("%s owner: no force load succeeded\n", who);
        bench_result("contention", args->label, "hand-off failed", 1, "", "", "MISSED");
        return;
    }
    double med = bench_median(t, (size_t)ok), max = t[ok - 1];
    printf("%s owner: ForceLoad → held: median %.1f s, max %.1f s over %d profiles "
           "(ProfileService ≈ %.0f s at most)\n",
           who, med, max, ok, reference);
    char metric[96], target[32];
    snprintf(target, sizeof target, "<= ~%.0f", reference);
    snprintf(metric, sizeof metric, "ForceLoad → held, owner %s: median", who);
    bench_result("contention", args->label, metric, med, "s", "", "");
    snprintf(metric, sizeof metric, "ForceLoad → held, owner %s: max", who);
    bench_result("contention", args->label, metric, max, "s", target,
                 max <= reference * 1.1 + 1 ? "met" : "MISSED");
}

static void handoff(const bench_args *args)
{
    printf("hand-off: auto_save_period %.2g s, load_repeat_delay %.2g s, "
           "force_load_max_steps %d; each owner holds %d profiles, %d contested\n",
           g_config.auto_save_period, g_config.load_repeat_delay,
           g_config.force_load_max_steps, OWNER_PROFILES, HANDOFF_KEYS);
    memset(g->actors, 0, sizeof g->actors);
    actor owners[2];
    actor_start(&owners[0], owner_server, 0); /* alive */
    actor_start(&owners[1], owner_server, 1); /* to be killed */
    for (int i = 0; i < 2; i++)
        while (!atomic_load(&g->actors[i].ready))
            bench_sleep(0.005);
    actor_kill(&owners[1], 1);

    ps_profile_store *store = NULL;
    ps_service *s = server_new(&store);
    pending alive[HANDOFF_KEYS] = {0}, killed[HANDOFF_KEYS] = {0};
    char key[32];
    double t0 = bench_now();
    for (int i = 0; i < HANDOFF_KEYS; i++) {
        snprintf(key, sizeof key, "killed-%d", CONTESTED(i));
        killed[i].called = bench_now();
        BENCH_OK(ps_store_load_profile_async(store, key, NULL, force_loaded, &killed[i]));
    }
    int started_alive = 0, done = 0;
    while (done < 2 * HANDOFF_KEYS) {
        if (!started_alive && bench_now() - t0 >= g_config.auto_save_period) {
            for (int i = 0; i < HANDOFF_KEYS; i++) {
                snprintf(key, sizeof key, "alive-%d", CONTESTED(i));
                alive[i].called = bench_now();
                BENCH_OK(ps_store_load_profile_async(store, key, NULL, force_loaded,
                                                     &alive[i]));
            }
            started_alive = 1;
        }
        BENCH_OK(ps_service_update(s));
        done = 0;
        for (int i = 0; i < HANDOFF_KEYS; i++)
            done += (alive[i].held > 0) + (killed[i].held > 0);
        bench_sleep(TICK);
    }
    actor_join(&owners[0]);
    handoff_report(args, "alive", alive,
                   g_config.auto_save_period + g_config.load_repeat_delay);
    handoff_report(args, "killed", killed,
                   (g_config.force_load_max_steps + 1) * g_config.load_repeat_delay);
    for (int i = 0; i < HANDOFF_KEYS; i++) {
        ps_profile_free(alive[i].profile);
        ps_profile_free(killed[i].profile);
    }
    ps_service_free(s);
}

int main(int argc, char **argv)
{
    bench_args args;
    bench_parse_args(&args, argc, argv,
                     "[--phase throughput|handoff|both] [--seconds S] [--keys K] "
                     "[--servers N]");
    const char *phase = "both";
    for (int i = 0; i + 1 < args.argc; i++)
        if (strcmp(args.argv[i], "--phase") == 0)
            phase = args.argv[i + 1];
    int servers = (int)bench_opt(&args, "--servers", 8);
    double seconds = bench_opt(&args, "--seconds", args.smoke ? 1.5 : 20);
    if (servers < 1 || servers > MAX_ACTORS)
        bench_die("--servers must be 1..%d", MAX_ACTORS);
    g_url = args.url;
    g_threads = strcmp(args.label, "memory") == 0;
    g = mmap(NULL, sizeof *g, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED)
        bench_die("mmap failed");
    g->keys = (int)bench_opt(&args, "--keys", 16);
    g_data = bench_data_new(BENCH_DATA_BYTES, 8);
    ps_config_init(&g_config);
    if (args.smoke) {
        g_config.auto_save_period = 1;
        g_config.load_repeat_delay = 0.2;
        printf("SMOKE: timing settings scaled down: auto_save_period 1 s (default 30), "
               "load_repeat_delay 0.2 s (default 7)\n");
        bench_note("contention", args.label,
                   "SMOKE run: auto_save_period 1 s and "
                   "load_repeat_delay 0.2 s instead of the defaults 30 s and 7 s");
    }
    printf("bench_contention on %s (%s)\n", args.label,
           g_threads ? "servers are threads: memory: is per process"
                     : "servers are "
                       "processes");
    if (strcmp(phase, "throughput") == 0 || strcmp(phase, "both") == 0)
        throughput(&args, servers, seconds);
    if (strcmp(phase, "handoff") == 0 || strcmp(phase, "both") == 0)
        handoff(&args);
    json_decref(g_data);
    return 0;
}
