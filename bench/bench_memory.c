/*
 * bench_memory — Question 4: how much memory does an active profile take, and how
 * much of it is the library's own bookkeeping rather than the Data tree?
 *
 *   Data tree    the ~4 KB Data parsed by jansson, N times, alone: the heap bytes in
 *                use (mallinfo2, all arenas) before and after, per tree. This is the
 *                memory any program holding the profile's data needs: the raw side.
 *   library      the heap bytes in use before and after loading N profiles through
 *                the library (store pre-filled through the raw backend, backend
 *                caches warmed by loading other keys first), per profile. SQLite's
 *                own memory (sqlite3_status64 MEMORY_USED: page caches, statements,
 *                bounded per connection) is not counted, here or in the soak.
 *   bookkeeping  library − Data tree: profile object, MetaData copy and
 *                MetaTagsLatest, global updates, maps, auto-save list. For memory:
 *                the growth of the stored documents themselves (they gain the
 *                session fields) is measured and subtracted.
 *   resident     RSS growth per profile (includes allocator slack).
 *
 * Soak (--soak S seconds): A active profiles out of K keys, constant churn (release
 * one, load another, as fast as the backend allows); heap in use and RSS are sampled
 * eleven times, each after letting every operation in flight finish; growth is the
 * last sample against the one at 20 % of the run.
 *
 * Usage: bench_memory URL [--smoke] [--profiles N] [--soak S] [--active A] [--keys K]
 */
#include "bench.h"

#include <malloc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE "bench-memory"

/* SQLite's own memory: page caches, statements; bounded per connection. */
static size_t sqlite_memory(void)
{
    sqlite3_int64 used = 0, high = 0;
    sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &used, &high, 0);
    return (size_t)used;
}

/* Heap bytes in use, without SQLite's own: those belong to the backend. */
static size_t heap(void)
{
    return bench_heap_in_use() - sqlite_memory();
}

static const char *key_of(const char *prefix, long i)
{
    static char key[48];
    snprintf(key, sizeof key, "%s-%ld", prefix, i);
    return key;
}

/* ---- loading many profiles asynchronously ------------------------------------------ */

typedef struct batch {
    ps_profile **profiles;
    long done, failed;
} batch;

static void batch_done(int status, ps_profile *profile, void *userdata)
{
    batch *b = userdata;
    if (status == PS_OK)
        b->profiles[b->done] = profile;
    else
        b->failed++;
    b->done++;
}

/* Loads keys prefix-0 … prefix-(n-1); @return new array of profiles. */
static ps_profile **load_all(ps_service *s, ps_profile_store *store, bench_counts *c,
                             const char *prefix, long n)
{
    batch b = {calloc((size_t)n, sizeof(ps_profile *)), 0, 0};
    for (long i = 0; i < n; i++) {
        BENCH_OK(
            ps_store_load_profile_async(store, key_of(prefix, i), NULL, batch_done, &b));
        if (i % 64 == 63)
            BENCH_OK(ps_service_update(s));
    }
    while (b.done < n) {
        BENCH_OK(ps_service_update(s));
        bench_counts_wait(c, atomic_load(&c->updates) + 1, 0.01);
    }
    if (b.failed)
        bench_die("%ld loads failed", b.failed);
    return b.profiles;
}

static void release_all(ps_service *s, bench_counts *c, ps_profile **p, long n)
{
    long target = atomic_load(&c->updates) + n;
    for (long i = 0; i < n; i++) {
        BENCH_OK(ps_profile_release(p[i]));
        ps_profile_free(p[i]);
    }
    if (!bench_tick_until_updates(s, c, target, 600))
        bench_die("releases did not finish");
    free(p);
}

/* ---- the split --------------------------------------------------------------------- */

/* Heap bytes per Data tree, parsing @p n copies of @p text. */
static double data_tree_bytes(const char *text, size_t len, long n)
{
    json_t **trees = calloc((size_t)n, sizeof *trees);
    size_t h0 = heap();
    for (long i = 0; i < n; i++)
        trees[i] = json_loadb(text, len, 0, NULL);
    size_t h1 = heap();
    for (long i = 0; i < n; i++)
        json_decref(trees[i]);
    free(trees);
    return (double)(h1 - h0) / (double)n;
}

static size_t stored_len(ps_backend *raw, const char *key)
{
    ps_bytes bytes = {NULL, 0};
    BENCH_OK(raw->get(&bytes, raw, STORE, key));
    size_t len = bytes.len;
    ps_bytes_dispose(&bytes);
    return len;
}

static void split(const bench_args *args, ps_service *s, ps_profile_store *store,
                  bench_counts *c, ps_backend *raw, long n)
{
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 4);
    char *data_text = json_dumps(data, JSON_COMPACT);
    size_t doc_len = 0;
    char *doc = bench_doc_encode(data, &doc_len);
    double tree = data_tree_bytes(data_text, strlen(data_text), n);

    bench_prefill(raw, STORE, "mem-", 0, n, doc, doc_len, 4);
    /* Warm the library's backend connections (statement and page caches) and its
     * worker threads on other keys, so what follows grows with profiles only. */
    long warm = n < 2000 ? n : 2000;
    release_all(s, c, load_all(s, store, c, "warm", warm), warm);
    malloc_trim(0);

    size_t len0 = stored_len(raw, "mem-0");
    size_t h0 = heap(), r0 = bench_rss();
    ps_profile **p = load_all(s, store, c, "mem", n);
    BENCH_OK(ps_service_update(s));
    size_t h1 = heap(), r1 = bench_rss();
    double stored_growth = 0;
    if (strcmp(args->label, "memory") == 0) /* the store is in this heap */
        stored_growth = (double)stored_len(raw, "mem-0") - (double)len0;
    double total = (double)(h1 - h0) / (double)n - stored_growth;
    double book = total - tree;
    double rss = ((double)r1 - (double)r0) / (double)n;
    printf("Data tree: %.0f B per profile (parsed alone; %zu bytes of JSON)\n", tree,
           strlen(data_text));
    printf("library:   %.0f B per active profile (heap in use)%s\n", total,
           stored_growth ? " after the stored documents' growth" : "");
    printf(
        "bookkeeping: %.0f B per profile = %.1f %% of the Data tree (target <= 20 %%)\n",
        book, 100 * book / tree);
    printf("resident:  %.0f B per profile (RSS growth)\n", rss);
    bench_result("memory", args->label, "Data tree per profile", tree, "B", "", "");
    bench_result("memory", args->label, "library heap per active profile", total, "B", "",
                 "");
    bench_result("memory", args->label, "bookkeeping per profile", book, "B", "", "");
    bench_result("memory", args->label, "bookkeeping / Data tree", 100 * book / tree, "%",
                 "<= 20", book <= 0.2 * tree ? "met" : "MISSED");
    bench_result("memory", args->label, "RSS per active profile", rss, "B", "", "");
    release_all(s, c, p, n);
    free(data_text);
    free(doc);
    json_decref(data);
}

/* ---- soak -------------------------------------------------------------------------- */

typedef struct soak {
    ps_profile **slots; /* active profiles; NULL while a slot's load is in flight */
    char *busy;         /* per key: active or loading */
    int *key_of_slot;
    long started, loads, releases, failed;
} soak;

typedef struct soak_load {
    soak *s;
    int slot, key;
} soak_load;

static void soak_loaded(int status, ps_profile *profile, void *userdata)
{
    soak_load *l = userdata;
    if (status == PS_OK) {
        l->s->slots[l->slot] = profile;
        l->s->loads++;
    } else {
        l->s->busy[l->key] = 0;
        l->s->key_of_slot[l->slot] = -1;
        l->s->failed++;
    }
    free(l);
}

static void soak_start_load(ps_profile_store *store, soak *k, int slot, int keys)
{
    int key;
    do
        key = rand() % keys;
    while (k->busy[key]);
    k->busy[key] = 1;
    k->key_of_slot[slot] = key;
    k->started++;
    soak_load *l = malloc(sizeof *l);
    *l = (soak_load){k, slot, key};
    BENCH_OK(
        ps_store_load_profile_async(store, key_of("soak", key), NULL, soak_loaded, l));
}

/* Stops churning until every load has finished and every release is stored, so each
 * sample sees exactly the active profiles and no operation in flight. */
static void quiesce(ps_service *s, bench_counts *c, soak *k, long updates0)
{
    while (k->loads + k->failed < k->started ||
           atomic_load(&c->updates) < updates0 + k->started + k->releases) {
        BENCH_OK(ps_service_update(s));
        bench_counts_wait(c, atomic_load(&c->updates) + 1, 0.005);
    }
    BENCH_OK(ps_service_update(s));
}

static void run_soak(const bench_args *args, ps_service *s, ps_profile_store *store,
                     bench_counts *c, ps_backend *raw, double seconds, int active,
                     int keys)
{
    /* Every key exists before the soak: a memory: store would otherwise grow with
     * each first load of a key, which is stored data, not the library's. */
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 5);
    size_t len = 0;
    char *doc = bench_doc_encode(data, &len);
    bench_prefill(raw, STORE, "soak-", 0, keys, doc, len, 4);
    free(doc);
    json_decref(data);

    soak k = {calloc((size_t)active, sizeof(ps_profile *)),
              calloc((size_t)keys, 1),
              calloc((size_t)active, sizeof(int)),
              0,
              0,
              0,
              0};
    long updates0 = atomic_load(&c->updates);
    for (int i = 0; i < active; i++)
        soak_start_load(store, &k, i, keys);
    double t0 = bench_now(), next_sample = t0;
    size_t heaps[11], rss[11], sq[11];
    double at[11];
    int samples = 0;
    while (samples < 11) {
        double now = bench_now();
        if (now >= next_sample) {
            quiesce(s, c, &k, updates0);
            malloc_trim(0);
            heaps[samples] = heap();
            rss[samples] = bench_rss();
            sq[samples] = sqlite_memory();
            at[samples] = now - t0;
            printf("soak t=%5.1f s: heap %8.2f MB  rss %8.2f MB  sqlite %6.2f MB  loads "
                   "%ld  "
                   "releases %ld\n",
                   at[samples], heaps[samples] / 1e6, rss[samples] / 1e6,
                   sq[samples] / 1e6, k.loads, k.releases);
            samples++;
            next_sample = t0 + seconds * samples / 10;
            if (samples == 11)
                break; /* quiet: nothing in flight for the final release */
        }
        /* Churn: release up to 8 active profiles per tick, each replaced by a load. */
        for (int n = 0, i = rand() % active; n < 8; n++, i = (i + 1) % active) {
            if (!k.slots[i])
                continue;
            BENCH_OK(ps_profile_release(k.slots[i]));
            ps_profile_free(k.slots[i]);
            k.slots[i] = NULL;
            k.busy[k.key_of_slot[i]] = 0;
            k.releases++;
            soak_start_load(store, &k, i, keys);
        }
        BENCH_OK(ps_service_update(s));
        bench_counts_wait(c, atomic_load(&c->updates) + 1, 0.002);
    }
    double churn = (double)(k.loads + k.releases) / at[10];
    double growth = 100.0 * ((double)heaps[10] - (double)heaps[2]) / (double)heaps[2];
    double rss_growth = 100.0 * ((double)rss[10] - (double)rss[2]) / (double)rss[2];
    printf(
        "soak: %.0f loads+releases per second, heap growth %.2f %%, RSS growth %.2f %% "
        "(t=%.0f s → t=%.0f s)\n",
        churn, growth, rss_growth, at[2], at[10]);
    bench_result("memory", args->label, "soak churn (loads + releases)", churn, "1/s", "",
                 "");
    bench_result("memory", args->label, "soak heap growth", growth, "%", "< 1",
                 growth < 1 ? "met" : "MISSED");
    bench_result("memory", args->label, "soak RSS growth", rss_growth, "%", "", "");
    bench_note("memory", args->label,
               "soak: %.0f s, %d active of %d keys, %ld loads, "
               "%ld releases, %ld failed loads",
               at[10], active, keys, k.loads, k.releases, k.failed);
    long n = 0;
    ps_profile **rest = calloc((size_t)active, sizeof *rest);
    for (int i = 0; i < active; i++)
        if (k.slots[i])
            rest[n++] = k.slots[i];
    release_all(s, c, rest, n);
    free(k.slots);
    free(k.busy);
    free(k.key_of_slot);
}

int main(int argc, char **argv)
{
    bench_args args;
    bench_parse_args(&args, argc, argv,
                     "[--profiles N] [--soak S] [--active A] [--keys K]");
    long n = (long)bench_opt(&args, "--profiles", args.smoke ? 200 : 10000);
    double soak_s = bench_opt(&args, "--soak", args.smoke ? 2 : 60);
    int active = (int)bench_opt(&args, "--active", args.smoke ? 50 : 1000);
    int keys = (int)bench_opt(&args, "--keys", args.smoke ? 100 : 2000);
    if (keys < 2 * active)
        bench_die("--keys must be at least twice --active");
    printf("bench_memory on %s: %ld profiles; soak %.0f s with %d active of %d keys\n",
           args.label, n, soak_s, active, keys);
    srand(7);

    bench_counts c;
    bench_counts_init(&c);
    ps_service *s = bench_service_new(args.url, &c, NULL);
    json_t *data = bench_data_new(BENCH_DATA_BYTES, 4);
    ps_profile_store *store = NULL;
    BENCH_OK(ps_service_get_profile_store(&store, s, STORE, data));
    json_decref(data);
    ps_backend *raw = NULL;
    BENCH_OK(ps_backend_open(&raw, args.url));

    split(&args, s, store, &c, raw, n);
    if (soak_s > 0)
        run_soak(&args, s, store, &c, raw, soak_s, active, keys);

    ps_backend_free(raw);
    ps_service_free(s);
    bench_counts_dispose(&c);
    return 0;
}
