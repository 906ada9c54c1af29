/* test_round_trips.c — backend round trips per operation (issue #7, question 2): a
 * counting wrapper over the backend vtable shows exactly one atomic update per load,
 * per auto-save, per save and per release, and no get besides a view's one.
 * Run as `test_round_trips URL`. The auto-save runs on the virtual clock of support.h;
 * waiting is only for the worker threads, on a condition variable. */
#include "support.h"

#include <errno.h>
#include <time.h>

/* ---- a counting backend ------------------------------------------------------------ */

/* Outlives the service, which frees the backend. */
typedef struct counts {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    long gets, updates, writes, transforms, others;
} counts;

typedef struct counting_backend {
    ps_backend parent;
    ps_backend *inner;
    counts *c;
} counting_backend;

typedef struct counting_call {
    ps_transform_fn fn;
    void *userdata;
    counts *c;
    int wrote;
} counting_call;

static void bump(counts *c, long *field)
{
    pthread_mutex_lock(&c->lock);
    (*field)++;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

static int counting_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    counting_call *call = ud;
    int rc = call->fn(out, current, call->userdata);
    call->wrote = rc == PS_OK && out->doc.data != NULL;
    bump(call->c, &call->c->transforms);
    return rc;
}

static int counting_update(ps_backend *b, const char *store, const char *key,
                           ps_transform_fn fn, void *userdata)
{
    counting_backend *cb = (counting_backend *)b;
    counting_call call = {fn, userdata, cb->c, 0};
    int rc = cb->inner->update(cb->inner, store, key, counting_transform, &call);
    if (rc == PS_OK && call.wrote)
        bump(cb->c, &cb->c->writes);
    bump(cb->c, &cb->c->updates);
    return rc;
}

static int counting_get(ps_bytes *out, ps_backend *b, const char *store, const char *key)
{
    counting_backend *cb = (counting_backend *)b;
    bump(cb->c, &cb->c->gets);
    return cb->inner->get(out, cb->inner, store, key);
}

static int counting_remove(ps_backend *b, const char *store, const char *key)
{
    counting_backend *cb = (counting_backend *)b;
    bump(cb->c, &cb->c->others);
    return cb->inner->remove(cb->inner, store, key);
}

static int counting_list(ps_backend *b, const char *store, const char *prefix,
                         ps_key_fn fn, void *userdata)
{
    counting_backend *cb = (counting_backend *)b;
    bump(cb->c, &cb->c->others);
    return cb->inner->list(cb->inner, store, prefix, fn, userdata);
}

static void counting_free(ps_backend *b)
{
    counting_backend *cb = (counting_backend *)b;
    ps_backend_free(cb->inner);
    free(cb);
}

static counts g_counts = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0};

typedef struct snapshot {
    long gets, updates, writes, transforms, others;
} snapshot;

static snapshot take(void)
{
    pthread_mutex_lock(&g_counts.lock);
    snapshot s = {g_counts.gets, g_counts.updates, g_counts.writes, g_counts.transforms,
                  g_counts.others};
    pthread_mutex_unlock(&g_counts.lock);
    return s;
}

/* The difference between two snapshots must be exactly these counts. */
#define ASSERT_DELTA(a, b, upd, get)                                                     \
    do {                                                                                 \
        PS_ASSERT_EQ((b).updates - (a).updates, (upd));                                  \
        PS_ASSERT_EQ((b).writes - (a).writes, (upd));                                    \
        PS_ASSERT_EQ((b).transforms - (a).transforms, (upd)); /* no CAS retries */       \
        PS_ASSERT_EQ((b).gets - (a).gets, (get));                                        \
        PS_ASSERT_EQ((b).others - (a).others, 0);                                        \
    } while (0)

/* A service on g_url (virtual clock) whose backend counts into g_counts. */
static ps_service *counted_service(const char *job)
{
    ps_config config;
    test_config(&config, g_url, 0, job);
    counting_backend *cb = calloc(1, sizeof *cb);
    PS_ASSERT(cb != NULL);
    PS_ASSERT_OK(ps_backend_open(&cb->inner, g_url));
    PS_ASSERT_OK(ps_backend_init(&cb->parent, cb->inner->version));
    cb->parent.get = counting_get;
    cb->parent.update = counting_update;
    cb->parent.free = counting_free;
    cb->parent.remove = cb->inner->remove ? counting_remove : NULL;
    cb->parent.list = cb->inner->list ? counting_list : NULL;
    cb->c = &g_counts;
    config.backend = &cb->parent;
    return test_service_from(&config, NULL);
}

/* Ticks without moving the clock until @p updates updates have returned, then a few
 * more ticks with short waits to catch any update that should not happen. Waits only
 * for the workers (condition variable), never for the clock. */
static void settle(ps_service *s, long updates)
{
    int after = 0; /* ticks since the count was reached: ~20 ms to catch extras */
    for (int i = 0; i < 20000 && after < 20; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        pthread_mutex_lock(&g_counts.lock);
        long now = g_counts.updates;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += 1000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
        while (g_counts.updates == now &&
               pthread_cond_timedwait(&g_counts.changed, &g_counts.lock, &deadline) !=
                   ETIMEDOUT)
            ;
        pthread_mutex_unlock(&g_counts.lock);
        if (now >= updates)
            after++;
    }
    PS_ASSERT(take().updates >= updates);
}

static long g_saves;

static int count_save(ps_profile *profile, void *userdata)
{
    (void)profile;
    (void)userdata;
    g_saves++;
    return 0;
}

/* ---- tests ------------------------------------------------------------------------- */

/* One profile: create, auto-save, explicit save, release; then an existing key. */
static void test_one_profile(void)
{
    ps_service *s = counted_service("round-trips-1");
    ps_profile_store *store = test_store(s, test_store_name("rt-one"));
    ps_profile *p = NULL;

    snapshot a = take();
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "player-1", NULL, NULL));
    snapshot b = take();
    ASSERT_DELTA(a, b, 1, 0); /* load of a never-created key: one update */

    /* Auto-save: due one period after the load; one tick past it saves it once. */
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(5));
    PS_ASSERT_OK(ps_profile_set_before_save(p, count_save, NULL));
    ps_config defaults;
    ps_config_init(&defaults);
    a = take();
    test_clock_advance(&g_clock, defaults.auto_save_period + 0.5);
    settle(s, a.updates + 1);
    b = take();
    PS_ASSERT_EQ(g_saves, 1);
    ASSERT_DELTA(a, b, 1, 0);

    a = take();
    PS_ASSERT_OK(ps_profile_save(p));
    settle(s, a.updates + 1);
    b = take();
    ASSERT_DELTA(a, b, 1, 0);

    a = take();
    PS_ASSERT_OK(ps_profile_release(p));
    settle(s, a.updates + 1);
    b = take();
    ASSERT_DELTA(a, b, 1, 0);
    ps_profile_free(p);

    a = take();
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "player-1", NULL, NULL));
    b = take();
    ASSERT_DELTA(a, b, 1, 0); /* load of an existing, released key: one update */
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(p), "Coins")), 5);

    /* Shutdown releases the one active profile: one update. */
    a = take();
    PS_ASSERT_OK(ps_service_shutdown(s));
    b = take();
    ASSERT_DELTA(a, b, 1, 0);
    ps_profile_free(p);
    ps_service_free(s);
}

/* Several profiles over one auto-save period: each save started is one update. */
static void test_auto_save_period(void)
{
    enum { N = 8 };
    ps_service *s = counted_service("round-trips-2");
    ps_profile_store *store = test_store(s, test_store_name("rt-period"));
    ps_profile *p[N];
    char key[32];
    ps_config defaults;
    ps_config_init(&defaults);

    snapshot a = take();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "player-%d", i);
        PS_ASSERT_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
        PS_ASSERT_OK(ps_profile_set_before_save(p[i], count_save, NULL));
    }
    snapshot b = take();
    ASSERT_DELTA(a, b, N, 0);

    /* Up to the moment all are due: nothing is saved. */
    test_clock_advance(&g_clock, defaults.auto_save_period - 0.5);
    settle(s, b.updates);
    a = take();
    ASSERT_DELTA(b, a, 0, 0);

    /* One more period in steps of a quarter of the spread: about N saves. */
    long saves0 = g_saves;
    for (int i = 0; i < 4 * N; i++) {
        test_clock_advance(&g_clock, defaults.auto_save_period / (4 * N));
        PS_ASSERT_OK(ps_service_update(s));
    }
    long saves = g_saves - saves0;
    settle(s, a.updates + saves);
    b = take();
    PS_ASSERT(saves >= N - 1 && saves <= N + 1);
    PS_ASSERT_EQ(g_saves - saves0, saves); /* none started while settling */
    ASSERT_DELTA(a, b, saves, 0);

    a = take();
    for (int i = 0; i < N; i++) {
        PS_ASSERT_OK(ps_profile_release(p[i]));
        ps_profile_free(p[i]);
    }
    settle(s, a.updates + N);
    b = take();
    ASSERT_DELTA(a, b, N, 0);
    ps_service_free(s);
}

/* A view reads once and never writes. */
static void test_view(void)
{
    ps_service *s = counted_service("round-trips-3");
    ps_profile_store *store = test_store(s, test_store_name("rt-view"));
    ps_profile *p = NULL;
    snapshot a = take();
    PS_ASSERT_OK(ps_store_view_profile(&p, store, "never-created"));
    snapshot b = take();
    ASSERT_DELTA(a, b, 0, 1);
    ps_profile_free(p);
    ps_service_free(s);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    PS_RUN(test_one_profile);
    PS_RUN(test_auto_save_period);
    PS_RUN(test_view);
    printf("ok\n");
    return 0;
}
