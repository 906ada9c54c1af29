/*
 * test_backend.c — the backend contract suite: `test_backend URL`.
 *
 * The same checks run against every implementation (memory:, sqlite:PATH,
 * postgres://…, faulty:…), as libgit2 runs tests/libgit2/odb/backend/ over each ODB
 * backend. Store names carry a per-run prefix so a persistent store (postgres) can be
 * reused across runs; a sqlite: file is deleted at the start.
 */
#include "test.h"

#include "profileservice/backend.h"

#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *g_url;
static const char *g_sqlite_path; /* set for sqlite: URLs */
static int g_in_process;          /* memory: (or a shim over it): no sharing */
static int g_private;             /* exactly "memory:": each handle its own store */
static char g_run[64];            /* per-run store name prefix */
static int g_shim;                /* faulty:…: spurious conflicts re-run transforms */

/* How many times a transform ran: exactly @p want, or at least that many behind the
 * faulty: shim, whose injected conflicts run it once more and drop the result. */
#define ASSERT_CALLS(calls, want)                                                   \
    do {                                                                            \
        if (g_shim)                                                                 \
            PS_ASSERT((calls) >= (want));                                           \
        else                                                                        \
            PS_ASSERT_EQ(calls, want);                                              \
    } while (0)

static ps_backend *open_backend(void)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    PS_ASSERT(b != NULL);
    PS_ASSERT_OK(ps_backend_check(b));
    return b;
}

/* A store name unique to this run and test. */
static const char *store_name(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s-%s", g_run, name);
    return buf;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- transforms ---------------------------------------------------------------- */

typedef struct tctx {
    int calls;
    int saw_null;           /* the last call saw an absent key */
    char seen[256];         /* the last current value (truncated) */
    const char *value;      /* what set_transform writes */
    int quarantine;         /* ask for quarantine with reason "test reason" */
} tctx;

static void note_current(tctx *t, const ps_bytes *current)
{
    t->calls++;
    t->saw_null = current == NULL;
    t->seen[0] = '\0';
    if (current) {
        PS_ASSERT(current->data != NULL);
        PS_ASSERT_EQ(current->data[current->len], '\0');
        snprintf(t->seen, sizeof t->seen, "%s", current->data);
    }
}

static int set_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    tctx *t = userdata;
    PS_ASSERT(out->doc.data == NULL && out->quarantine == 0); /* zeroed for us */
    note_current(t, current);
    if (t->quarantine) {
        out->quarantine = 1;
        snprintf(out->reason, sizeof out->reason, "test reason");
    }
    return ps_bytes_set(&out->doc, t->value, strlen(t->value));
}

static int fail_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    note_current(userdata, current);
    /* bytes allocated before failing must be freed by the backend, never written */
    PS_ASSERT_OK(ps_bytes_set(&out->doc, "must not be written", 19));
    return ps_error_set(PS_ECORRUPT, "test transform refused");
}

static int positive_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    note_current(userdata, current);
    PS_ASSERT_OK(ps_bytes_set(&out->doc, "must not be written", 19));
    return 1;
}

static int nowrite_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    note_current(userdata, current);
    out->quarantine = 1; /* ignored: nothing is written */
    return PS_OK;
}

/* Decimal counter: absent = 0. */
static int incr_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    long n = current ? strtol(current->data, NULL, 10) : 0;
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld", n + 1);
    if (userdata)
        __atomic_add_fetch((int *)userdata, 1, __ATOMIC_RELAXED);
    return ps_bytes_set(&out->doc, buf, (size_t)len);
}

static void put(ps_backend *b, const char *store, const char *key, const char *value)
{
    tctx t = {0};
    t.value = value;
    PS_ASSERT_OK(b->update(b, store, key, set_transform, &t));
}

static void expect_value(ps_backend *b, const char *store, const char *key,
                         const char *value)
{
    ps_bytes got = {NULL, 0};
    PS_ASSERT_OK(b->get(&got, b, store, key));
    PS_ASSERT_EQ(got.len, strlen(value));
    PS_ASSERT_STR_EQ(got.data, value);
    ps_bytes_dispose(&got);
}

static void expect_absent(ps_backend *b, const char *store, const char *key)
{
    ps_bytes got = {(char *)"garbage", 7};
    PS_ASSERT_STATUS(b->get(&got, b, store, key), PS_ENOTFOUND);
    PS_ASSERT(got.data == NULL && got.len == 0);
}

/* ---- basic contract ------------------------------------------------------------ */

static void test_get_absent(void)
{
    ps_backend *b = open_backend();
    char s[96];
    expect_absent(b, store_name(s, sizeof s, "absent"), "nobody");
    PS_ASSERT_EQ(ps_error_last()->code, PS_ENOTFOUND);
    ps_backend_free(b);
}

static void test_update_creates_and_sees_current(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "create");
    tctx t = {0};
    t.value = "first";
    PS_ASSERT_OK(b->update(b, s, "k", set_transform, &t));
    ASSERT_CALLS(t.calls, 1);
    PS_ASSERT(t.saw_null);
    expect_value(b, s, "k", "first");

    t = (tctx){0};
    t.value = "second";
    PS_ASSERT_OK(b->update(b, s, "k", set_transform, &t));
    ASSERT_CALLS(t.calls, 1);
    PS_ASSERT(!t.saw_null);
    PS_ASSERT_STR_EQ(t.seen, "first");
    expect_value(b, s, "k", "second");

    t = (tctx){0};
    t.value = ""; /* an empty value is a value, not an absence */
    PS_ASSERT_OK(b->update(b, s, "k", set_transform, &t));
    expect_value(b, s, "k", "");
    ps_backend_free(b);
}

static void test_transform_error_writes_nothing(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "txerr");
    tctx t = {0};
    PS_ASSERT_STATUS(b->update(b, s, "new", fail_transform, &t), PS_ECORRUPT);
    PS_ASSERT_STR_EQ(ps_error_last()->message, "test transform refused");
    expect_absent(b, s, "new");

    put(b, s, "old", "kept");
    t = (tctx){0};
    PS_ASSERT_STATUS(b->update(b, s, "old", fail_transform, &t), PS_ECORRUPT);
    ASSERT_CALLS(t.calls, 1);
    expect_value(b, s, "old", "kept");

    /* a transform breaking the contract (positive return) writes nothing either */
    PS_ASSERT_STATUS(b->update(b, s, "old", positive_transform, &t), PS_EINVAL);
    expect_value(b, s, "old", "kept");
    ps_backend_free(b);
}

static int count_fn(const ps_quarantine_entry *e, void *u)
{
    (void)e;
    (*(int *)u)++;
    return 0;
}

static void test_no_write(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "nowrite");
    tctx t = {0};
    PS_ASSERT_OK(b->update(b, s, "absent", nowrite_transform, &t));
    PS_ASSERT(t.saw_null);
    expect_absent(b, s, "absent");

    put(b, s, "k", "same");
    t = (tctx){0};
    PS_ASSERT_OK(b->update(b, s, "k", nowrite_transform, &t));
    ASSERT_CALLS(t.calls, 1);
    PS_ASSERT_STR_EQ(t.seen, "same");
    expect_value(b, s, "k", "same");
    if (b->quarantine_list) { /* quarantine=1 with no doc writes no quarantine */
        int n = 0;
        PS_ASSERT_OK(b->quarantine_list(b, s, NULL, count_fn, &n));
        PS_ASSERT_EQ(n, 0);
    }
    ps_backend_free(b);
}

/* ---- conflicts ------------------------------------------------------------------ */

typedef struct conflict_ctx {
    int calls;
    ps_backend *other; /* the backend that writes in between */
    const char *store;
    char seen[2][64];
} conflict_ctx;

/* First call: another writer changes the key before we write, so our write must lose
 * the compare-and-set and the backend must call us again with the new value. */
static int conflict_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    conflict_ctx *c = userdata;
    PS_ASSERT(current != NULL);
    if (c->calls < 2)
        snprintf(c->seen[c->calls], sizeof c->seen[0], "%s", current->data);
    if (c->calls++ == 0)
        put(c->other, c->store, "k", "nested");
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s+outer", current->data);
    out->quarantine = 1;
    snprintf(out->reason, sizeof out->reason, "conflict test");
    return ps_bytes_set(&out->doc, buf, (size_t)n);
}

typedef struct qlist {
    int n;
    ps_quarantine_entry last;
    char store[128], key[128], reason[128], doc[128];
    int64_t ids[8];
} qlist;

static int qlist_fn(const ps_quarantine_entry *e, void *userdata)
{
    qlist *q = userdata;
    PS_ASSERT(e->doc.data != NULL && e->doc.data[e->doc.len] == '\0');
    if (q->n < 8)
        q->ids[q->n] = e->id;
    q->n++;
    q->last = *e;
    snprintf(q->store, sizeof q->store, "%s", e->store);
    snprintf(q->key, sizeof q->key, "%s", e->key);
    snprintf(q->reason, sizeof q->reason, "%s", e->reason);
    snprintf(q->doc, sizeof q->doc, "%s", e->doc.data);
    return 0;
}

static void test_conflict_reruns_transform(void)
{
    ps_backend *b = open_backend();
    /* "memory:" handles share nothing; its update holds no lock while the transform
     * runs, so a nested write through the same handle is a real conflict. */
    ps_backend *other = g_private ? b : open_backend();
    char s[96];
    store_name(s, sizeof s, "conflict");
    put(b, s, "k", "base");
    conflict_ctx c = {0, other, s, {"", ""}};
    PS_ASSERT_OK(b->update(b, s, "k", conflict_transform, &c));
    ASSERT_CALLS(c.calls, 2);
    PS_ASSERT_STR_EQ(c.seen[0], "base");
    PS_ASSERT_STR_EQ(c.seen[1], "nested");
    expect_value(b, s, "k", "nested+outer");
    expect_value(other, s, "k", "nested+outer");
    if (b->quarantine_list) { /* the losing attempt's quarantine copy was rolled back */
        qlist q = {0};
        PS_ASSERT_OK(b->quarantine_list(b, s, "k", qlist_fn, &q));
        PS_ASSERT_EQ(q.n, 1);
        PS_ASSERT_STR_EQ(q.doc, "nested");
    }
    if (other != b)
        ps_backend_free(other);
    ps_backend_free(b);
}

#define THREADS 8
#define PER_THREAD 200

typedef struct counter_arg {
    ps_backend *b;
    const char *store;
    int calls;
} counter_arg;

static void *counter_thread(void *p)
{
    counter_arg *a = p;
    for (int i = 0; i < PER_THREAD; i++)
        PS_ASSERT_OK(a->b->update(a->b, a->store, "counter", incr_transform, &a->calls));
    return NULL;
}

static void test_threads_increment(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "threads");
    pthread_t th[THREADS];
    counter_arg args[THREADS];
    double t0 = now_seconds();
    for (int i = 0; i < THREADS; i++) {
        args[i] = (counter_arg){b, s, 0};
        PS_ASSERT_EQ(pthread_create(&th[i], NULL, counter_thread, &args[i]), 0);
    }
    int calls = 0;
    for (int i = 0; i < THREADS; i++) {
        PS_ASSERT_EQ(pthread_join(th[i], NULL), 0);
        calls += args[i].calls;
    }
    double dt = now_seconds() - t0;
    char want[16];
    snprintf(want, sizeof want, "%d", THREADS * PER_THREAD);
    expect_value(b, s, "counter", want);
    printf("   %d threads x %d updates: %.3f s, %.0f updates/s, %d transform calls "
           "(%d retries)\n", THREADS, PER_THREAD, dt, THREADS * PER_THREAD / dt, calls,
           calls - THREADS * PER_THREAD);
    ps_backend_free(b);
}

#define PROCS 4

/* Each child opens its own backend after fork: a connection must never cross a fork
 * (SQLite's POSIX locks are per process; libpq's socket would be shared). */
static void counter_child(const char *store)
{
    ps_backend *b = NULL;
    int rc = ps_backend_open(&b, g_url);
    for (int i = 0; rc == PS_OK && i < PER_THREAD; i++)
        rc = b->update(b, store, "counter", incr_transform, NULL);
    if (rc != PS_OK)
        fprintf(stderr, "child %d: %s: %s\n", (int)getpid(), ps_status_name(rc),
                ps_error_last()->message);
    ps_backend_free(b);
    _exit(rc == PS_OK ? 0 : 1);
}

static void test_processes_increment(void)
{
    if (g_in_process) {
        printf("   skipped: %s is not shared between processes\n", g_url);
        return;
    }
    char s[96];
    store_name(s, sizeof s, "procs");
    if (g_sqlite_path) { /* the children race to create the file and its schema */
        char p[4096];
        unlink(g_sqlite_path);
        snprintf(p, sizeof p, "%s-wal", g_sqlite_path), unlink(p);
        snprintf(p, sizeof p, "%s-shm", g_sqlite_path), unlink(p);
    }
    fflush(NULL);
    double t0 = now_seconds();
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        PS_ASSERT(pids[i] >= 0);
        if (pids[i] == 0)
            counter_child(s);
    }
    for (int i = 0; i < PROCS; i++) {
        int status = 0;
        PS_ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
        PS_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    printf("   %d processes x %d updates: %.3f s\n", PROCS, PER_THREAD,
           now_seconds() - t0);
    ps_backend *b = open_backend();
    char want[16];
    snprintf(want, sizeof want, "%d", PROCS * PER_THREAD);
    expect_value(b, s, "counter", want);
    ps_backend_free(b);
}

/* ---- quarantine, list, remove -------------------------------------------------- */

/* A write with quarantine=1 over an existing value keeps that value aside. */
static void quarantine_write(ps_backend *b, const char *store, const char *value)
{
    tctx t = {0};
    t.value = value;
    t.quarantine = 1;
    PS_ASSERT_OK(b->update(b, store, "k", set_transform, &t));
    expect_value(b, store, "k", value);
}

static void test_quarantine(void)
{
    ps_backend *b = open_backend();
    if (!b->quarantine_list) {
        printf("   skipped: no quarantine_list member\n");
        ps_backend_free(b);
        return;
    }
    char s[96], other[96];
    store_name(s, sizeof s, "quarantine");
    store_name(other, sizeof other, "quarantine-other");
    quarantine_write(b, s, "created"); /* nothing to keep aside for an absent key */
    put(b, other, "k", "elsewhere");
    qlist q = {0};
    PS_ASSERT_OK(b->quarantine_list(b, s, NULL, qlist_fn, &q));
    PS_ASSERT_EQ(q.n, 0);

    double before = (double)time(NULL);
    quarantine_write(b, s, "repaired");
    PS_ASSERT_OK(b->quarantine_list(b, s, "k", qlist_fn, &q));
    PS_ASSERT_EQ(q.n, 1);
    PS_ASSERT_STR_EQ(q.store, s);
    PS_ASSERT_STR_EQ(q.key, "k");
    PS_ASSERT_STR_EQ(q.reason, "test reason");
    PS_ASSERT_STR_EQ(q.doc, "created");
    PS_ASSERT(q.last.saved_at >= before - 5 && q.last.saved_at <= before + 60);

    quarantine_write(b, s, "again");
    q = (qlist){0};
    PS_ASSERT_OK(b->quarantine_list(b, s, NULL, qlist_fn, &q));
    PS_ASSERT_EQ(q.n, 2);
    PS_ASSERT(q.ids[0] < q.ids[1]); /* oldest first */
    PS_ASSERT_STR_EQ(q.doc, "repaired");
    q = (qlist){0};
    PS_ASSERT_OK(b->quarantine_list(b, other, NULL, qlist_fn, &q));
    PS_ASSERT_EQ(q.n, 0);
    PS_ASSERT_OK(b->quarantine_list(b, s, "nope", qlist_fn, &q));
    PS_ASSERT_EQ(q.n, 0);
    ps_backend_free(b);
}

typedef struct keys {
    int n, stop_after;
    char k[16][64];
} keys;

static int keys_fn(const char *key, void *userdata)
{
    keys *k = userdata;
    PS_ASSERT(k->n < 16);
    snprintf(k->k[k->n++], sizeof k->k[0], "%s", key);
    return k->stop_after && k->n >= k->stop_after;
}

static void expect_keys(ps_backend *b, const char *store, const char *prefix,
                        const char *const *want, int n)
{
    keys k = {0};
    PS_ASSERT_OK(b->list(b, store, prefix, keys_fn, &k));
    PS_ASSERT_EQ(k.n, n);
    for (int i = 0; i < n; i++)
        PS_ASSERT_STR_EQ(k.k[i], want[i]);
}

static void test_list(void)
{
    ps_backend *b = open_backend();
    if (!b->list) {
        printf("   skipped: no list member\n");
        ps_backend_free(b);
        return;
    }
    char s[96], s2[96];
    store_name(s, sizeof s, "list");
    store_name(s2, sizeof s2, "list2");
    const char *all[] = {"a", "ab", "abc", "ac", "b", "b/x", "c"};
    for (int i = 6; i >= 0; i--) /* insertion order must not matter */
        put(b, s, all[i], "v");
    put(b, s2, "a", "v");
    put(b, s2, "zz", "v");
    expect_keys(b, s, NULL, all, 7);
    expect_keys(b, s, "", all, 7);
    expect_keys(b, s, "ab", (const char *[]){"ab", "abc"}, 2);
    expect_keys(b, s, "a", all, 4);
    expect_keys(b, s, "b/", (const char *[]){"b/x"}, 1);
    expect_keys(b, s, "zz", NULL, 0);
    expect_keys(b, s2, NULL, (const char *[]){"a", "zz"}, 2);
    char s3[96];
    expect_keys(b, store_name(s3, sizeof s3, "list-empty"), NULL, NULL, 0);
    keys k = {0};
    k.stop_after = 2;
    PS_ASSERT_OK(b->list(b, s, NULL, keys_fn, &k));
    PS_ASSERT_EQ(k.n, 2);
    ps_backend_free(b);
}

static void test_remove(void)
{
    ps_backend *b = open_backend();
    if (!b->remove) {
        printf("   skipped: no remove member\n");
        ps_backend_free(b);
        return;
    }
    char s[96];
    store_name(s, sizeof s, "remove");
    put(b, s, "gone", "v1");
    put(b, s, "stays", "v");
    PS_ASSERT_OK(b->remove(b, s, "gone"));
    expect_absent(b, s, "gone");
    PS_ASSERT_STATUS(b->remove(b, s, "gone"), PS_ENOTFOUND);
    expect_value(b, s, "stays", "v");
    tctx t = {0};
    t.value = "v2"; /* re-created from nothing */
    PS_ASSERT_OK(b->update(b, s, "gone", set_transform, &t));
    PS_ASSERT(t.saw_null);
    expect_value(b, s, "gone", "v2");
    if (b->list)
        expect_keys(b, s, NULL, (const char *[]){"gone", "stays"}, 2);
    ps_backend_free(b);
}

/* ---- values, keys, stores ------------------------------------------------------ */

typedef struct big {
    const char *data;
    size_t len;
} big;

static int big_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    (void)current;
    big *v = userdata;
    return ps_bytes_set(&out->doc, v->data, v->len);
}

static void round_trip(ps_backend *b, const char *store, const char *key, big *v)
{
    PS_ASSERT_OK(b->update(b, store, key, big_transform, v));
    ps_bytes got = {NULL, 0};
    PS_ASSERT_OK(b->get(&got, b, store, key));
    PS_ASSERT_EQ(got.len, v->len);
    PS_ASSERT(memcmp(got.data, v->data, v->len) == 0);
    PS_ASSERT_EQ(got.data[got.len], '\0');
    ps_bytes_dispose(&got);
}

static void test_big_value(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "big");
    size_t len = 4u << 20;
    char *data = malloc(len);
    PS_ASSERT(data != NULL);
    for (size_t i = 0; i < len; i++) /* JSON-like text: no NUL inside */
        data[i] = (char)(' ' + (i * 7 + i / 4096) % 90);
    big v = {data, len};
    double t0 = now_seconds();
    round_trip(b, s, "big", &v);
    data[len / 2] = '!';
    round_trip(b, s, "big", &v);
    printf("   4 MB value: 2 writes + 2 reads in %.3f s\n", now_seconds() - t0);
    free(data);
    ps_backend_free(b);
}

/* Values are byte strings: NUL and 0xFF bytes survive (quarantined originals may be
 * anything). */
static void test_binary_value(void)
{
    ps_backend *b = open_backend();
    char s[96], data[256];
    store_name(s, sizeof s, "binary");
    for (int i = 0; i < 256; i++)
        data[i] = (char)(255 - i);
    big v = {data, sizeof data};
    round_trip(b, s, "bin", &v);
    ps_backend_free(b);
}

static void test_utf8_keys(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "магазин");
    const char *sorted[] = {"e", "\xC3\xA9", "ключ", "鍵🔑"}; /* bytewise order */
    for (int i = 3; i >= 0; i--)
        put(b, s, sorted[i], sorted[i]);
    for (int i = 0; i < 4; i++)
        expect_value(b, s, sorted[i], sorted[i]);
    if (b->list) {
        expect_keys(b, s, NULL, sorted, 4);
        expect_keys(b, s, "кл", (const char *[]){"ключ"}, 1);
        expect_keys(b, s, "鍵", (const char *[]){"鍵🔑"}, 1);
    }
    ps_backend_free(b);
}

static void test_stores_isolated(void)
{
    ps_backend *b = open_backend();
    char a[96], bb[96], ab[96];
    store_name(a, sizeof a, "iso-a");
    store_name(bb, sizeof bb, "iso-b");
    put(b, a, "k", "in a");
    put(b, bb, "k", "in b");
    put(b, bb, "only-b", "x");
    expect_value(b, a, "k", "in a");
    expect_value(b, bb, "k", "in b");
    expect_absent(b, a, "only-b");
    /* (store "…ab", key "c") and (store "…a", key "bc") are different keys */
    store_name(ab, sizeof ab, "iso-ab");
    put(b, ab, "c", "ab/c");
    expect_absent(b, a, "bc");
    if (b->list)
        expect_keys(b, a, NULL, (const char *[]){"k"}, 1);
    if (b->remove) {
        PS_ASSERT_OK(b->remove(b, a, "k"));
        expect_value(b, bb, "k", "in b");
        PS_ASSERT_STATUS(b->remove(b, a, "only-b"), PS_ENOTFOUND);
        expect_value(b, bb, "only-b", "x");
    }
    ps_backend_free(b);
}

/* Two handles on one URL are one store (memory:NAME included), and what one wrote
 * outlives it. A plain "memory:" handle is a private store: nothing to check. */
static void test_handles_share(void)
{
    if (g_private) {
        printf("   skipped: memory: handles are private stores\n");
        return;
    }
    char s[96];
    store_name(s, sizeof s, "share");
    ps_backend *one = open_backend(), *two = open_backend();
    put(one, s, "k", "from one");
    expect_value(two, s, "k", "from one");
    ps_backend_free(one);
    put(two, s, "k2", "from two");
    ps_backend_free(two);
    ps_backend *three = open_backend();
    expect_value(three, s, "k", "from one");
    expect_value(three, s, "k2", "from two");
    ps_backend_free(three);
}

static void test_sqlite_file_mode(void)
{
    if (!g_sqlite_path) {
        printf("   skipped: not a sqlite: url\n");
        return;
    }
    struct stat st;
    PS_ASSERT_EQ(stat(g_sqlite_path, &st), 0);
    PS_ASSERT_EQ(st.st_mode & 0777, 0600);
    char p[4096];
    snprintf(p, sizeof p, "%s-wal", g_sqlite_path);
    if (stat(p, &st) == 0)
        PS_ASSERT_EQ(st.st_mode & 0777, 0600);
}

/* server_time (version 2, optional): the store's clock, in Unix seconds. The test
 * store runs on this machine, so it agrees with ours to within a few seconds. */
static void test_server_time(void)
{
    ps_backend *b = open_backend();
    if (b->version < 2 || !b->server_time) {
        printf("   skipped: no server_time member (the store has no clock of its own)\n");
        ps_backend_free(b);
        return;
    }
    struct timespec ts;
    double t = 0;
    PS_ASSERT_OK(b->server_time(&t, b));
    clock_gettime(CLOCK_REALTIME, &ts);
    PS_ASSERT(t > (double)ts.tv_sec - 5 && t < (double)ts.tv_sec + 5);
    double later = 0;
    PS_ASSERT_OK(b->server_time(&later, b));
    PS_ASSERT(later >= t);
    PS_ASSERT_STATUS(b->server_time(NULL, b), PS_EINVAL);
    ps_backend_free(b);
}

/* ---- bad arguments ------------------------------------------------------------- */

/* The call fails with PS_EINVAL and records a fresh, non-empty message. */
#define ASSERT_EINVAL(call)                                                         \
    do {                                                                            \
        ps_error_set(PS_OK, "sentinel");                                            \
        PS_ASSERT_STATUS(call, PS_EINVAL);                                          \
        PS_ASSERT_EQ(ps_error_last()->code, PS_EINVAL);                             \
        PS_ASSERT(strcmp(ps_error_last()->message, "sentinel") != 0);               \
        PS_ASSERT(ps_error_last()->message[0] != '\0');                             \
    } while (0)

static int stop_key(const char *key, void *u)
{
    (void)key, (void)u;
    return 1;
}

static void test_bad_member_args(void)
{
    ps_backend *b = open_backend();
    char s[96];
    store_name(s, sizeof s, "badargs");
    put(b, s, "k", "untouched");
    ps_bytes out = {NULL, 0};
    tctx t = {0};
    t.value = "written";
    ASSERT_EINVAL(b->get(NULL, b, s, "k"));
    ASSERT_EINVAL(b->get(&out, b, NULL, "k"));
    ASSERT_EINVAL(b->get(&out, b, s, NULL));
    ASSERT_EINVAL(b->get(&out, b, "", "k"));
    ASSERT_EINVAL(b->get(&out, b, s, ""));
    PS_ASSERT(out.data == NULL);
    ASSERT_EINVAL(b->update(b, NULL, "k", set_transform, &t));
    ASSERT_EINVAL(b->update(b, s, NULL, set_transform, &t));
    ASSERT_EINVAL(b->update(b, s, "", set_transform, &t));
    ASSERT_EINVAL(b->update(b, s, "k", NULL, &t));
    PS_ASSERT_EQ(t.calls, 0);
    if (b->list) {
        ASSERT_EINVAL(b->list(b, NULL, NULL, stop_key, NULL));
        ASSERT_EINVAL(b->list(b, s, NULL, NULL, NULL));
    }
    if (b->remove) {
        ASSERT_EINVAL(b->remove(b, NULL, "k"));
        ASSERT_EINVAL(b->remove(b, s, NULL));
    }
    if (b->quarantine_list)
        ASSERT_EINVAL(b->quarantine_list(b, s, NULL, NULL, NULL));
    expect_value(b, s, "k", "untouched");
    ps_backend_free(b);
}

/* A URL that may hold a password is never echoed whole, only its scheme. */
static void test_bad_urls(void)
{
    ps_backend *b = (ps_backend *)&b;
    ASSERT_EINVAL(ps_backend_open(NULL, "memory:"));
    ASSERT_EINVAL(ps_backend_open(&b, NULL));
    PS_ASSERT(b == NULL);
    ASSERT_EINVAL(ps_backend_open(&b, ""));
    ASSERT_EINVAL(ps_backend_open(&b, "sqlite:"));
    ASSERT_EINVAL(ps_backend_open(&b, "nope"));
    ASSERT_EINVAL(ps_backend_open(&b, "mysql://root:hunter2@db.example/profiles"));
    PS_ASSERT(strstr(ps_error_last()->message, "mysql") != NULL);
    PS_ASSERT(strstr(ps_error_last()->message, "hunter2") == NULL);
    ASSERT_EINVAL(ps_backend_open(&b, "host=db.example password=hunter2"));
    PS_ASSERT(strstr(ps_error_last()->message, "hunter2") == NULL);
    ASSERT_EINVAL(ps_backend_open(&b, "sqlite::memory:"));
    PS_ASSERT(b == NULL);
    /* faulty: quotes its options, never the URL it wraps */
    ASSERT_EINVAL(ps_backend_open(&b, "faulty:seed=1"));
    ASSERT_EINVAL(ps_backend_open(&b, "faulty:error=2:memory:"));
    ASSERT_EINVAL(ps_backend_open(&b, "faulty:seed=-1:memory:"));
    ASSERT_EINVAL(ps_backend_open(&b, "faulty:bogus=1:memory:"));
    PS_ASSERT(strstr(ps_error_last()->message, "bogus") != NULL);
    ASSERT_EINVAL(ps_backend_open(&b, "faulty:error=0.1,,seed=2:memory:"));
    ASSERT_EINVAL(ps_backend_open(&b, "faulty:postgres://root:hunter2@db.example/p"));
    PS_ASSERT(strstr(ps_error_last()->message, "hunter2") == NULL);
    ASSERT_EINVAL(ps_backend_open(&b, "faulty::nope"));
    PS_ASSERT(b == NULL);
}

static int dummy_get(ps_bytes *o, ps_backend *b, const char *s, const char *k)
{
    (void)o, (void)b, (void)s, (void)k;
    return PS_ENOTFOUND;
}
static int dummy_update(ps_backend *b, const char *s, const char *k, ps_transform_fn t,
                        void *u)
{
    (void)b, (void)s, (void)k, (void)t, (void)u;
    return PS_OK;
}
static void dummy_free(ps_backend *b)
{
    (void)b;
}

static void test_check_and_init(void)
{
    ps_backend good = PS_BACKEND_INIT;
    good.get = dummy_get, good.update = dummy_update, good.free = dummy_free;
    PS_ASSERT_OK(ps_backend_check(&good));
    ps_backend bad = good;
    bad.version = 0;
    ASSERT_EINVAL(ps_backend_check(&bad));
    bad.version = 99;
    ASSERT_EINVAL(ps_backend_check(&bad));
    PS_ASSERT(strstr(ps_error_last()->message, "99") != NULL);
    bad = good, bad.get = NULL;
    ASSERT_EINVAL(ps_backend_check(&bad));
    PS_ASSERT(strstr(ps_error_last()->message, "get") != NULL);
    bad = good, bad.update = NULL;
    ASSERT_EINVAL(ps_backend_check(&bad));
    PS_ASSERT(strstr(ps_error_last()->message, "update") != NULL);
    bad = good, bad.free = NULL;
    ASSERT_EINVAL(ps_backend_check(&bad));
    PS_ASSERT(strstr(ps_error_last()->message, "free") != NULL);
    ASSERT_EINVAL(ps_backend_check(NULL));

    ps_backend init;
    memset(&init, 0xAB, sizeof init);
    ASSERT_EINVAL(ps_backend_init(&init, 0));
    ASSERT_EINVAL(ps_backend_init(&init, PS_BACKEND_VERSION + 1));
    ASSERT_EINVAL(ps_backend_init(NULL, PS_BACKEND_VERSION));
    PS_ASSERT_OK(ps_backend_init(&init, PS_BACKEND_VERSION));
    PS_ASSERT_EQ(init.version, PS_BACKEND_VERSION);
    PS_ASSERT(init.get == NULL && init.quarantine_list == NULL &&
              init.server_time == NULL);
    ps_backend_free(NULL);

    ps_bytes bytes = {NULL, 0};
    ps_bytes_dispose(NULL);
    ASSERT_EINVAL(ps_bytes_set(NULL, "x", 1));
    ASSERT_EINVAL(ps_bytes_set(&bytes, NULL, 1));
    PS_ASSERT_OK(ps_bytes_set(&bytes, NULL, 0));
    PS_ASSERT(bytes.data != NULL && bytes.data[0] == '\0' && bytes.len == 0);
    ps_bytes_dispose(&bytes);
    PS_ASSERT(bytes.data == NULL && bytes.len == 0);
}

/* ---- main ---------------------------------------------------------------------- */

/* What a faulty:OPTIONS:INNER-URL wraps (sharing and files are the inner store's). */
static const char *inner_url(const char *url)
{
    while (strncmp(url, "faulty:", 7) == 0 && strchr(url + 7, ':'))
        url = strchr(url + 7, ':') + 1;
    return url;
}

static void setup(const char *url)
{
    const char *inner = inner_url(url);
    g_url = url;
    g_shim = inner != url;
    g_in_process = strstr(inner, "memory:") != NULL;
    g_private = strcmp(inner, "memory:") == 0;
    snprintf(g_run, sizeof g_run, "t%ld-%d", (long)time(NULL), (int)getpid());
    if (strncmp(inner, "sqlite:", 7) == 0 && inner[7]) {
        char p[4096];
        g_sqlite_path = inner + 7;
        PS_ASSERT(unlink(g_sqlite_path) == 0 || errno == ENOENT);
        snprintf(p, sizeof p, "%s-wal", g_sqlite_path), unlink(p);
        snprintf(p, sizeof p, "%s-shm", g_sqlite_path), unlink(p);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL|env:VAR   (memory:, memory:NAME, sqlite:PATH, "
                        "postgres://...)\n", argv[0]);
        return 2;
    }
    /* "env:NAME" reads the URL from $NAME: tests/pg/with_postgres.sh exports
     * PS_TEST_POSTGRES_URL only once its throwaway cluster is up. */
    const char *url = argv[1];
    if (strncmp(url, "env:", 4) == 0 && !(url = getenv(argv[1] + 4))) {
        fprintf(stderr, "%s: $%s is not set\n", argv[0], argv[1] + 4);
        return 2;
    }
    setup(url);
    PS_RUN(test_get_absent); /* first: creates a sqlite file */
    PS_RUN(test_sqlite_file_mode);
    PS_RUN(test_update_creates_and_sees_current);
    PS_RUN(test_transform_error_writes_nothing);
    PS_RUN(test_no_write);
    PS_RUN(test_conflict_reruns_transform);
    PS_RUN(test_threads_increment);
    PS_RUN(test_quarantine);
    PS_RUN(test_list);
    PS_RUN(test_remove);
    PS_RUN(test_big_value);
    PS_RUN(test_binary_value);
    PS_RUN(test_utf8_keys);
    PS_RUN(test_stores_isolated);
    PS_RUN(test_handles_share);
    PS_RUN(test_processes_increment);
    PS_RUN(test_sqlite_file_mode); /* again: the file the children created */
    PS_RUN(test_server_time);
    PS_RUN(test_bad_member_args);
    PS_RUN(test_bad_urls);
    PS_RUN(test_check_and_init);
    printf("ok: backend contract holds for %s\n", argv[1]); /* argv: no password */
    return 0;
}
