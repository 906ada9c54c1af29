/* bench.c — shared helpers of the bench/ programs (see bench.h). */
#include "bench.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- clocks ------------------------------------------------------------------------ */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void bench_sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* ---- command line ------------------------------------------------------------------ */

static const char *label_of(const char *url)
{
    if (strncmp(url, "memory:", 7) == 0)
        return "memory";
    if (strncmp(url, "sqlite:", 7) == 0)
        return "sqlite";
    if (strncmp(url, "postgres", 8) == 0)
        return "postgres";
    return "other";
}

void bench_remove_sqlite(const char *url)
{
    if (strncmp(url, "sqlite:", 7) != 0)
        return;
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s%s", url + 7, suffixes[i]);
        unlink(path);
    }
}

void bench_parse_args(bench_args *out, int argc, char **argv, const char *usage)
{
    memset(out, 0, sizeof *out);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s URL [--smoke] %s\n", argv[0], usage);
        exit(2);
    }
    out->url = argv[1];
    if (strncmp(out->url, "env:", 4) == 0) {
        out->url = getenv(argv[1] + 4);
        if (!out->url || !*out->url) {
            printf("skipped: %s is not set\n", argv[1] + 4);
            exit(77);
        }
    }
    /* A bare memory: store lives only as long as its handle; the programs open more
     * than one handle (library and raw side), so they share a named one. */
    if (strcmp(out->url, "memory:") == 0)
        out->url = "memory:bench";
    out->label = label_of(out->url);
    out->argc = argc - 2;
    out->argv = argv + 2;
    out->smoke = bench_flag(out, "--smoke");
    bench_remove_sqlite(out->url);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

double bench_opt(const bench_args *a, const char *name, double fallback)
{
    for (int i = 0; i + 1 < a->argc; i++)
        if (strcmp(a->argv[i], name) == 0)
            return atof(a->argv[i + 1]);
    return fallback;
}

int bench_flag(const bench_args *a, const char *name)
{
    for (int i = 0; i < a->argc; i++)
        if (strcmp(a->argv[i], name) == 0)
            return 1;
    return 0;
}

/* ---- results ----------------------------------------------------------------------- */

void bench_result(const char *bench, const char *backend, const char *metric,
                  double value, const char *unit, const char *target, const char *verdict)
{
    printf("RESULT\t%s\t%s\t%s\t%.6g\t%s\t%s\t%s\n", bench, backend, metric, value, unit,
           target ? target : "", verdict ? verdict : "");
}

void bench_note(const char *bench, const char *backend, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    printf("NOTE\t%s\t%s\t%s\n", bench, backend, text);
}

void bench_fail(const char *file, int line, const char *what, int rc)
{
    fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", file, line, what, ps_status_name(rc),
            ps_error_last()->message);
    exit(1);
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ---- the counting wrapper ---------------------------------------------------------- */

void bench_counts_init(bench_counts *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
}

void bench_counts_dispose(bench_counts *c)
{
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->lock);
}

int bench_counts_wait(bench_counts *c, long target, double timeout)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    long long ns = deadline.tv_nsec + (long long)(timeout * 1e9);
    deadline.tv_sec += (time_t)(ns / 1000000000LL);
    deadline.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&c->lock);
    while (atomic_load(&c->updates) < target)
        if (pthread_cond_timedwait(&c->changed, &c->lock, &deadline) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&c->lock);
    return atomic_load(&c->updates) >= target;
}

int bench_tick_until_updates(ps_service *service, bench_counts *c, long target,
                             double timeout)
{
    double deadline = bench_now() + timeout;
    long seen = -1;
    for (;;) {
        BENCH_OK(ps_service_update(service));
        long now = atomic_load(&c->updates);
        if (now >= target)
            return 1;
        if (bench_now() > deadline)
            return 0;
        if (now != seen) {
            /* An update just returned: its job reaches the done queue a moment
             * later, and only a tick starts the key's next queued op. */
            seen = now;
            bench_sleep(50e-6);
            continue;
        }
        bench_counts_wait(c, now + 1, 0.001);
    }
}

typedef struct counting_backend {
    ps_backend parent;
    ps_backend *inner;
    bench_counts *counts;
} counting_backend;

typedef struct counting_call {
    counting_backend *b;
    ps_transform_fn fn;
    void *userdata;
    int wrote;
} counting_call;

static long long elapsed_ns(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (long long)(b.tv_sec - a->tv_sec) * 1000000000LL + (b.tv_nsec - a->tv_nsec);
}

static int counting_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    counting_call *call = userdata;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = call->fn(out, current, call->userdata);
    atomic_fetch_add(&call->b->counts->transform_ns, elapsed_ns(&t0));
    atomic_fetch_add(&call->b->counts->transforms, 1);
    call->wrote = rc == PS_OK && out->doc.data != NULL;
    return rc;
}

static int counting_get(ps_bytes *out, ps_backend *backend, const char *store,
                        const char *key)
{
    counting_backend *b = (counting_backend *)backend;
    atomic_fetch_add(&b->counts->gets, 1);
    return b->inner->get(out, b->inner, store, key);
}

static int counting_update(ps_backend *backend, const char *store, const char *key,
                           ps_transform_fn transform, void *userdata)
{
    counting_backend *b = (counting_backend *)backend;
    counting_call call = {b, transform, userdata, 0};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = b->inner->update(b->inner, store, key, counting_transform, &call);
    bench_counts *c = b->counts;
    atomic_fetch_add(&c->update_ns, elapsed_ns(&t0));
    if (rc == PS_OK && call.wrote)
        atomic_fetch_add(&c->writes, 1);
    if (rc != PS_OK)
        atomic_fetch_add(&c->failures, 1);
    pthread_mutex_lock(&c->lock);
    atomic_fetch_add(&c->updates, 1);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int counting_list(ps_backend *backend, const char *store, const char *prefix,
                         ps_key_fn fn, void *userdata)
{
    counting_backend *b = (counting_backend *)backend;
    atomic_fetch_add(&b->counts->others, 1);
    return b->inner->list(b->inner, store, prefix, fn, userdata);
}

static int counting_remove(ps_backend *backend, const char *store, const char *key)
{
    counting_backend *b = (counting_backend *)backend;
    atomic_fetch_add(&b->counts->others, 1);
    return b->inner->remove(b->inner, store, key);
}

static int counting_quarantine_list(ps_backend *backend, const char *store,
                                    const char *key, ps_quarantine_fn fn, void *userdata)
{
    counting_backend *b = (counting_backend *)backend;
    atomic_fetch_add(&b->counts->others, 1);
    return b->inner->quarantine_list(b->inner, store, key, fn, userdata);
}

#if PS_BACKEND_VERSION >= 2
static int counting_server_time(double *out, ps_backend *backend)
{
    counting_backend *b = (counting_backend *)backend;
    atomic_fetch_add(&b->counts->clock_reads, 1);
    return b->inner->server_time(out, b->inner);
}
#endif

static void counting_free(ps_backend *backend)
{
    counting_backend *b = (counting_backend *)backend;
    ps_backend_free(b->inner);
    free(b);
}

int bench_counting_backend_new(ps_backend **out, ps_backend *inner, bench_counts *counts)
{
    *out = NULL;
    counting_backend *b = calloc(1, sizeof *b);
    if (!b) {
        ps_backend_free(inner);
        return PS_ENOMEM;
    }
    ps_backend_init(&b->parent, inner->version);
    b->inner = inner;
    b->counts = counts;
    b->parent.get = counting_get;
    b->parent.update = counting_update;
    b->parent.free = counting_free;
    b->parent.list = inner->list ? counting_list : NULL;
    b->parent.remove = inner->remove ? counting_remove : NULL;
    b->parent.quarantine_list = inner->quarantine_list ? counting_quarantine_list : NULL;
#if PS_BACKEND_VERSION >= 2
    if (inner->version >= 2 && inner->server_time)
        b->parent.server_time = counting_server_time;
#endif
    *out = &b->parent;
    return PS_OK;
}

/* ---- the profile document ---------------------------------------------------------- */

static const char *const rarities[] = {"Common", "Uncommon", "Rare", "Epic", "Legendary"};
static const char *const items[] = {"sword", "shield", "bow",    "potion", "helmet",
                                    "boots", "ring",   "amulet", "staff",  "axe"};

static json_t *item_new(unsigned i, unsigned seed)
{
    char id[48];
    snprintf(id, sizeof id, "%s_of_the_%s_%03u", items[(i + seed) % 10],
             rarities[(i * 7 + seed) % 5], i);
    return json_pack("{s:s, s:i, s:s, s:i, s:b, s:f}", "Id", id, "Count",
                     (int)((i * 37 + seed) % 99 + 1), "Rarity", rarities[(i + seed) % 5],
                     "Level", (int)((i * 13 + seed) % 60 + 1), "Equipped", i % 7 == 0,
                     "Durability", (double)((i * 29 + seed) % 1000) / 10.0);
}

static json_t *quest_new(unsigned i, unsigned seed)
{
    return json_pack("{s:i, s:i, s:b, s:s}", "Progress", (int)((i * 11 + seed) % 50),
                     "Goal", 50, "Done", (i + seed) % 3 == 0, "Stage",
                     (i % 2) ? "Collect" : "Defeat");
}

json_t *bench_data_new(size_t bytes, unsigned seed)
{
    json_t *data = json_pack(
        "{s:i, s:i, s:i, s:I, s:I, s:{s:b, s:f, s:s, s:f, s:s},"
        " s:{s:i, s:i, s:i, s:i, s:I}, s:[], s:{}}",
        "Coins", (int)(1000 + seed % 1000), "Gems", (int)(seed % 500), "Level",
        (int)(1 + seed % 100), "XP", (json_int_t)(100000 + seed * 7), "LastLogin",
        (json_int_t)1700000000, "Settings", "Music", 1, "Sfx", 0.75, "Language", "en",
        "Sensitivity", 1.25, "Graphics", "High", "Stats", "Kills", (int)(seed % 9999),
        "Deaths", (int)(seed % 777), "Wins", (int)(seed % 321), "Losses",
        (int)(seed % 123), "PlayTime", (json_int_t)(3600 + seed), "Inventory", "Quests");
    if (!data)
        bench_die("bench_data_new: out of memory");
    json_t *inventory = json_object_get(data, "Inventory");
    json_t *quests = json_object_get(data, "Quests");
    for (unsigned i = 0; json_dumpb(data, NULL, 0, JSON_COMPACT) < bytes; i++) {
        if (i % 3 == 2) {
            char name[32];
            snprintf(name, sizeof name, "quest_%03u", i);
            json_object_set_new(quests, name, quest_new(i, seed));
        } else {
            json_array_append_new(inventory, item_new(i, seed));
        }
    }
    return data;
}

char *bench_doc_encode(const json_t *data, size_t *len)
{
    json_t *doc =
        json_pack("{s:O, s:{s:I, s:i, s:{}, s:I}, s:[i[]], s:{}, s:[], s:b}", "Data",
                  data, "MetaData", "ProfileCreateTime", (json_int_t)1700000000,
                  "SessionLoadCount", 0, "MetaTags", "LastUpdate", (json_int_t)1700000000,
                  "GlobalUpdates", 0, "RobloxMetaData", "UserIds", "WasCorrupted", 0);
    if (!doc)
        bench_die("bench_doc_encode: out of memory");
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (!text)
        bench_die("bench_doc_encode: cannot encode");
    *len = strlen(text);
    return text;
}

typedef struct prefill_job {
    ps_backend *backend;
    const char *store, *prefix;
    long first, n, step, offset;
    const char *doc;
    size_t len;
} prefill_job;

static int prefill_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    const prefill_job *job = userdata;
    return ps_bytes_set(&out->doc, job->doc, job->len);
}

static void *prefill_thread(void *arg)
{
    prefill_job *job = arg;
    char key[64];
    for (long i = job->offset; i < job->n; i += job->step) {
        snprintf(key, sizeof key, "%s%ld", job->prefix, job->first + i);
        BENCH_OK(
            job->backend->update(job->backend, job->store, key, prefill_transform, job));
    }
    return NULL;
}

void bench_prefill(ps_backend *backend, const char *store, const char *prefix, long first,
                   long n, const char *doc, size_t len, int threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    pthread_t tids[64];
    prefill_job jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (prefill_job){backend, store, prefix, first, n, threads, t, doc, len};
        if (pthread_create(&tids[t], NULL, prefill_thread, &jobs[t]))
            bench_die("prefill: cannot start a thread");
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
}

/* ---- statistics -------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)rank;
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (rank - (double)lo);
}

double bench_median(double *v, size_t n)
{
    return bench_percentile(v, n, 50);
}

/* ---- a service --------------------------------------------------------------------- */

ps_service *bench_service_new(const char *url, bench_counts *counts,
                              const ps_config *settings)
{
    ps_config config;
    if (settings)
        config = *settings;
    else
        ps_config_init(&config);
    config.store_url = url;
    if (counts) {
        ps_backend *inner = NULL, *wrapped = NULL;
        BENCH_OK(ps_backend_open(&inner, url));
        BENCH_OK(bench_counting_backend_new(&wrapped, inner, counts));
        config.backend = wrapped;
    }
    ps_service *service = NULL;
    BENCH_OK(ps_service_new(&service, &config));
    return service;
}

size_t bench_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

size_t bench_heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
