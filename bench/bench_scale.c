/*
 * bench_scale — Question 5: does load latency stay flat as the store grows?
 *
 * The store is filled to each size in turn (default 1k, 100k, 1M stored ~4 KB
 * profiles) without the library, then --samples loads of random stored keys are
 * timed (blocking ps_store_load_profile; each followed by a release that is stored
 * before the next load starts, untimed). In the same run, interleaved with them, the
 * raw backend does the necessary work of a load on random keys: one atomic update
 * that parses the document, changes it and serializes it with jansson.
 *
 * Filling: memory: and postgres:// through the raw backend's update (from 4 threads);
 * sqlite: with one SQLite transaction of INSERTs into the backend's own table (the
 * backend syncs every commit, so a million single-row commits would take an hour;
 * the rows are the same ones its update would write). A --max-fill cap skips larger
 * sizes (run.sh caps PostgreSQL at 100k and says so).
 *
 * Usage: bench_scale URL [--smoke] [--sizes a,b,c] [--samples N] [--max-fill N]
 */
#include "bench.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE "bench-scale"
#define PREFIX "sc-"

static const char *key_of(long i)
{
    static char key[32];
    snprintf(key, sizeof key, PREFIX "%ld", i);
    return key;
}

/* ---- filling ----------------------------------------------------------------------- */

static void sqlite_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        bench_die("sqlite: %s: %s", sql, err ? err : "?");
}

/* Inserts keys [from, to) in one transaction. The backend has created the schema (it
 * was opened before); journal_mode=DELETE for the bulk insert (new pages need no
 * journal), WAL again afterwards, as the backend expects. */
static void sqlite_fill(const char *path, long from, long to, const char *doc, size_t len)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        bench_die("sqlite: cannot open %s", path);
    sqlite3_busy_timeout(db, 10000);
    sqlite_exec(db, "PRAGMA journal_mode=DELETE");
    sqlite_exec(db, "PRAGMA synchronous=OFF");
    sqlite_exec(db, "PRAGMA cache_size=-65536");
    sqlite_exec(db, "BEGIN");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO profiles(store, key, version, doc) "
                           "VALUES(?1, ?2, 1, ?3)",
                           -1, &st, NULL) != SQLITE_OK)
        bench_die("sqlite: prepare: %s", sqlite3_errmsg(db));
    for (long i = from; i < to; i++) {
        sqlite3_bind_text(st, 1, STORE, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key_of(i), -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob64(st, 3, doc, len, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            bench_die("sqlite: insert: %s", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite_exec(db, "COMMIT");
    sqlite_exec(db, "PRAGMA journal_mode=WAL");
    sqlite3_close(db);
}

static void fill(const bench_args *args, long from, long to, const char *doc, size_t len)
{
    double t0 = bench_now();
    if (strcmp(args->label, "sqlite") == 0) {
        sqlite_fill(args->url + 7, from, to, doc, len);
    } else {
        ps_backend *raw = NULL;
        BENCH_OK(ps_backend_open(&raw, args->url));
        bench_prefill(raw, STORE, PREFIX, from, to - from, doc, len, 4);
        ps_backend_free(raw);
    }
    printf("filled %ld → %ld profiles in %.1f s\n", from, to, bench_now() - t0);
}

/* ---- the raw backend's load: parse, change, serialize, compare-and-set ------------- */

static int raw_load(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)userdata;
    json_t *doc = current ? json_loadb(current->data, current->len, 0, NULL) : NULL;
    if (!doc)
        return PS_ECORRUPT;
    /* The work of taking a session, without leaving one (the library loads these
     * keys too): the same fields change, with values the library accepts. */
    json_t *meta = json_object_get(doc, "MetaData");
    json_object_set_new(meta, "LastUpdate", json_integer(1700000000));
    out->doc.data = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    if (!out->doc.data)
        return PS_ENOMEM;
    out->doc.len = strlen(out->doc.data);
    return PS_OK;
}

/* ---- measuring --------------------------------------------------------------------- */

typedef struct stats {
    double lib_p50, lib_p99, raw_p50, raw_p99;
} stats;

static long rand_key(long n)
{
    return (long)(((unsigned long)rand() << 16 ^ (unsigned long)rand()) %
                  (unsigned long)n);
}

static stats measure(const bench_args *args, long size, int samples, const json_t *data)
{
    bench_counts c;
    bench_counts_init(&c);
    ps_service *s = bench_service_new(args->url, &c, NULL);
    ps_profile_store *store = NULL;
    BENCH_OK(ps_service_get_profile_store(&store, s, STORE, data));
    ps_backend *raw = NULL;
    BENCH_OK(ps_backend_open(&raw, args->url));
    double *lib = calloc((size_t)samples, sizeof *lib);
    double *rawt = calloc((size_t)samples, sizeof *rawt);
    for (int i = -samples / 10; i < samples; i++) { /* the first 10 % warm up */
        ps_profile *p = NULL;
        long updates = atomic_load(&c.updates);
        double t0 = bench_now();
        BENCH_OK(ps_store_load_profile(&p, store, key_of(rand_key(size)), NULL, NULL));
        double t1 = bench_now();
        BENCH_OK(ps_profile_release(p));
        ps_profile_free(p);
        if (!bench_tick_until_updates(s, &c, updates + 2, 60))
            bench_die("release did not finish");
        double t2 = bench_now();
        BENCH_OK(raw->update(raw, STORE, key_of(rand_key(size)), raw_load, NULL));
        double t3 = bench_now();
        if (i >= 0) {
            lib[i] = t1 - t0;
            rawt[i] = t3 - t2;
        }
    }
    stats st = {bench_percentile(lib, (size_t)samples, 50),
                bench_percentile(lib, (size_t)samples, 99),
                bench_percentile(rawt, (size_t)samples, 50),
                bench_percentile(rawt, (size_t)samples, 99)};
    free(lib);
    free(rawt);
    ps_backend_free(raw);
    ps_service_free(s);
    bench_counts_dispose(&c);
    return st;
}

static void report(const bench_args *args, long size, const stats *st)
{
    char metric[96];
    printf("%8ld stored: load p50 %7.3f ms  p99 %7.3f ms | raw p50 %7.3f ms  p99 %7.3f "
           "ms | p50 ratio %.2f\n",
           size, st->lib_p50 * 1e3, st->lib_p99 * 1e3, st->raw_p50 * 1e3,
           st->raw_p99 * 1e3, st->lib_p50 / st->raw_p50);
    snprintf(metric, sizeof metric, "load p50 @ %ld stored", size);
    bench_result("scale", args->label, metric, st->lib_p50 * 1e3, "ms", "", "");
    snprintf(metric, sizeof metric, "load p99 @ %ld stored", size);
    bench_result("scale", args->label, metric, st->lib_p99 * 1e3, "ms", "", "");
    snprintf(metric, sizeof metric, "raw load p50 @ %ld stored", size);
    bench_result("scale", args->label, metric, st->raw_p50 * 1e3, "ms", "", "");
    snprintf(metric, sizeof metric, "raw load p99 @ %ld stored", size);
    bench_result("scale", args->label, metric, st->raw_p99 * 1e3, "ms", "", "");
    snprintf(metric, sizeof metric, "library / raw p50 @ %ld stored", size);
    bench_result("scale", args->label, metric, st->lib_p50 / st->raw_p50, "x", "", "");
}

int main(int argc, char **argv)
{
    bench_args args;
    bench_parse_args(&args, argc, argv, "[--sizes a,b,c] [--samples N] [--max-fill N]");
    const char *sizes_arg = args.smoke ? "100,1000" : "1000,100000,1000000";
    for (int i = 0; i + 1 < args.argc; i++)
        if (strcmp(args.argv[i], "--sizes") == 0)
            sizes_arg = args.argv[i + 1];
    int samples = (int)bench_opt(&args, "--samples", args.smoke ? 50 : 1000);
    long max_fill = (long)bench_opt(&args, "--max-fill", 1e12);
    printf("bench_scale on %s: sizes %s, %d timed loads per size\n", args.label,
           sizes_arg, samples);
    srand(11);

    json_t *data = bench_data_new(BENCH_DATA_BYTES, 6);
    size_t len = 0;
    char *doc = bench_doc_encode(data, &len);
    { /* creates the schema (sqlite: the table the bulk fill writes to) */
        ps_backend *b = NULL;
        BENCH_OK(ps_backend_open(&b, args.url));
        ps_backend_free(b);
    }
    long filled = 0;
    stats first = {0}, last = {0};
    long first_size = 0, last_size = 0;
    char *list = strdup(sizes_arg);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        long size = atol(tok);
        if (size <= filled)
            continue;
        if (size > max_fill) {
            printf("%ld stored: skipped (over --max-fill %ld)\n", size, max_fill);
            bench_note("scale", args.label,
                       "%ld stored profiles not measured: capped at "
                       "%ld for this backend (filling through the backend API is too "
                       "slow for the time budget)",
                       size, max_fill);
            continue;
        }
        fill(&args, filled, size, doc, len);
        filled = size;
        stats st = measure(&args, size, samples, data);
        report(&args, size, &st);
        if (!first_size) {
            first = st;
            first_size = size;
        }
        last = st;
        last_size = size;
    }
    if (last_size > first_size) {
        double flat = last.lib_p50 / first.lib_p50;
        printf("p50 at %ld / p50 at %ld = %.2f; raw: %.2f\n", last_size, first_size, flat,
               last.raw_p50 / first.raw_p50);
        char metric[96];
        snprintf(metric, sizeof metric, "load p50 growth %ld → %ld stored", first_size,
                 last_size);
        bench_result("scale", args.label, metric, flat, "x", "flat (< 1.5)",
                     flat < 1.5 ? "met" : "MISSED");
        snprintf(metric, sizeof metric, "raw p50 growth %ld → %ld stored", first_size,
                 last_size);
        bench_result("scale", args.label, metric, last.raw_p50 / first.raw_p50, "x", "",
                     "");
    }
    free(list);
    free(doc);
    json_decref(data);
    return 0;
}
