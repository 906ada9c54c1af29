/* test_service.c — ProfileService itself: configuration, IssueSignal and
 * CriticalStateSignal while the store fails (loads, saves and releases retried, no
 * data lost), shutdown, listeners on the host thread with re-entrant calls refused,
 * connections, and bad arguments. Run as `test_service URL`.
 * The store failures come from a small wrapper backend defined here: it forwards to
 * a backend opened from the URL and, while switched on, fails get and update with
 * PS_EBACKEND. It can also hold one key's updates at a gate. */
#include "support.h"

#include <math.h>

/* ---- a failing wrapper backend ------------------------------------------------- */

typedef struct flaky_backend {
    ps_backend parent;
    ps_backend *inner;
    atomic_int fail;     /* nonzero: get and update fail */
    atomic_int failures; /* calls failed on purpose */
    atomic_int updates;  /* updates forwarded to the inner backend and returned */
    char gate_key[64];   /* updates of this key wait while gate_closed */
    atomic_int gate_closed;
    atomic_int at_gate; /* a worker waits at the gate */
    int *free_calls;    /* counts free (outlives the backend); may be NULL */
} flaky_backend;

static int flaky_update(ps_backend *b, const char *store, const char *key,
                        ps_transform_fn fn, void *userdata)
{
    flaky_backend *f = (flaky_backend *)b;
    if (atomic_load(&f->fail)) {
        atomic_fetch_add(&f->failures, 1);
        return ps_error_set(PS_EBACKEND, "injected failure");
    }
    if (atomic_load(&f->gate_closed) && strcmp(key, f->gate_key) == 0) {
        atomic_store(&f->at_gate, 1);
        while (atomic_load(&f->gate_closed))
            usleep(100);
    }
    int rc = f->inner->update(f->inner, store, key, fn, userdata);
    atomic_fetch_add(&f->updates, 1);
    return rc;
}

static int flaky_get(ps_bytes *out, ps_backend *b, const char *store, const char *key)
{
    flaky_backend *f = (flaky_backend *)b;
    if (atomic_load(&f->fail)) {
        atomic_fetch_add(&f->failures, 1);
        return ps_error_set(PS_EBACKEND, "injected failure");
    }
    return f->inner->get(out, f->inner, store, key);
}

static void flaky_free(ps_backend *b)
{
    flaky_backend *f = (flaky_backend *)b;
    if (f->free_calls)
        (*f->free_calls)++;
    ps_backend_free(f->inner);
    free(f);
}

static flaky_backend *flaky_new(const char *url, int *free_calls)
{
    flaky_backend *f = calloc(1, sizeof *f);
    PS_ASSERT(f != NULL);
    PS_ASSERT_OK(ps_backend_init(&f->parent, PS_BACKEND_VERSION));
    PS_ASSERT_OK(ps_backend_open(&f->inner, url));
    f->parent.get = flaky_get;
    f->parent.update = flaky_update;
    f->parent.free = flaky_free;
    f->free_calls = free_calls;
    return f;
}

/* A service on g_url through a flaky wrapper; @p issues_for_critical 0 = default. */
static ps_service *flaky_service(flaky_backend **out, int64_t place, const char *job,
                                 test_recorder *rec, int issues_for_critical)
{
    ps_config config;
    test_config(&config, g_url, place, job);
    *out = flaky_new(g_url, NULL);
    config.backend = &(*out)->parent;
    if (issues_for_critical)
        config.issue_count_for_critical_state = issues_for_critical;
    return test_service_from(&config, rec);
}

/* The stored document of a key, read through the service's own store (works for any
 * URL, a private memory: one included). New reference, or NULL when absent. */
static json_t *flaky_doc(flaky_backend *f, const char *store, const char *key)
{
    ps_bytes bytes = {NULL, 0};
    int rc = f->inner->get(&bytes, f->inner, store, key);
    json_t *doc = NULL;
    if (rc == PS_OK) {
        doc = json_loadb(bytes.data, bytes.len, 0, NULL);
        PS_ASSERT(doc != NULL);
    } else {
        PS_ASSERT_EQ(rc, PS_ENOTFOUND);
    }
    ps_bytes_dispose(&bytes);
    return doc;
}

static char *flaky_raw(flaky_backend *f, const char *store, const char *key)
{
    ps_bytes bytes = {NULL, 0};
    int rc = f->inner->get(&bytes, f->inner, store, key);
    if (rc != PS_OK)
        PS_ASSERT_EQ(rc, PS_ENOTFOUND);
    return bytes.data;
}

static int put_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    (void)current;
    return ps_bytes_set(&out->doc, ud, strlen(ud));
}

static void flaky_put(flaky_backend *f, const char *store, const char *key,
                      const char *text)
{
    PS_ASSERT_OK(f->inner->update(f->inner, store, key, put_transform, (void *)text));
}

static json_int_t stored_coins(flaky_backend *f, const char *store, const char *key)
{
    json_t *doc = flaky_doc(f, store, key);
    json_t *v = json_object_get(json_object_get(doc, "Data"), "Coins");
    json_int_t coins = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(doc);
    return coins;
}

static int stored_has_session(flaky_backend *f, const char *store, const char *key)
{
    json_t *doc = flaky_doc(f, store, key);
    int has = json_object_get(json_object_get(doc, "MetaData"), "ActiveSession") != NULL;
    json_decref(doc);
    return has;
}

/* Ticks (clock still) until the stored Data.Coins of a key is @p want. */
static void wait_stored_coins(ps_service *s, flaky_backend *f, const char *store,
                              const char *key, json_int_t want)
{
    for (int i = 0; i < 20000 && stored_coins(f, store, key) != want; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        usleep(200);
    }
    PS_ASSERT_EQ(stored_coins(f, store, key), want);
}

static void set_coins(ps_profile *p, json_int_t coins)
{
    PS_ASSERT(json_object_set_new(ps_profile_data(p), "Coins", json_integer(coins)) == 0);
}

/* One virtual second per tick, with a short real wait for the workers. */
static void tick_one_second(ps_service *s)
{
    test_clock_advance(&g_clock, 1);
    PS_ASSERT_OK(ps_service_update(s));
    for (int i = 0; i < 10; i++) {
        usleep(200);
        PS_ASSERT_OK(ps_service_update(s));
    }
}


/* ---- configuration ------------------------------------------------------------- */

static void test_config_defaults(void)
{
    ps_config c;
    memset(&c, 0xAB, sizeof c);
    ps_config_init(&c);
    PS_ASSERT_EQ(c.version, PS_CONFIG_VERSION);
    /* ProfileService's SETTINGS (SEMANTICS.md §1.1). */
    PS_ASSERT(c.auto_save_period == 30);
    PS_ASSERT(c.load_repeat_delay == 7);
    PS_ASSERT_EQ(c.force_load_max_steps, 8);
    PS_ASSERT(c.assume_dead_session_lock == 1800);
    PS_ASSERT_EQ(c.issue_count_for_critical_state, 5);
    PS_ASSERT(c.issue_last == 120);
    PS_ASSERT(c.critical_state_last == 120);
    PS_ASSERT_EQ(c.max_document_size, 4 * 1024 * 1024);
    /* Documented defaults of the C port. */
    PS_ASSERT(c.write_cooldown == 0);
    PS_ASSERT_EQ(c.place_id, 0);
    PS_ASSERT(c.job_id == NULL && c.store_url == NULL && c.backend == NULL);
    PS_ASSERT(c.clock == NULL && c.sleep == NULL && c.clock_userdata == NULL);
    PS_ASSERT(c.worker_threads >= 1);
    ps_config_init(NULL); /* harmless */
}

typedef void (*config_breaker)(ps_config *c);
static void bad_version(ps_config *c)
{
    c->version = PS_CONFIG_VERSION + 1;
}
static void zero_version(ps_config *c)
{
    c->version = 0;
}
static void negative_auto_save(ps_config *c)
{
    c->auto_save_period = -30;
}
static void zero_auto_save(ps_config *c)
{
    c->auto_save_period = 0;
}
static void nan_auto_save(ps_config *c)
{
    c->auto_save_period = NAN;
}
static void negative_repeat(ps_config *c)
{
    c->load_repeat_delay = -1;
}
static void negative_cooldown(ps_config *c)
{
    c->write_cooldown = -7;
}
static void negative_dead_lock(ps_config *c)
{
    c->assume_dead_session_lock = -1800;
}
static void negative_issue_last(ps_config *c)
{
    c->issue_last = -120;
}
static void negative_critical_last(ps_config *c)
{
    c->critical_state_last = -1;
}
static void zero_steps(ps_config *c)
{
    c->force_load_max_steps = 0;
}
static void negative_steps(ps_config *c)
{
    c->force_load_max_steps = -8;
}
static void zero_issue_count(ps_config *c)
{
    c->issue_count_for_critical_state = 0;
}
static void empty_job(ps_config *c)
{
    c->job_id = "";
}
static void bad_utf8_job(ps_config *c)
{
    c->job_id = "job-\xff";
}
static void zero_workers(ps_config *c)
{
    c->worker_threads = 0;
}
static void bad_url(ps_config *c)
{
    c->store_url = "nosuch:thing";
}

static void test_bad_configs(void)
{
    static const struct {
        const char *what;
        config_breaker breaker;
    } cases[] = {
        {"version too new", bad_version},
        {"version 0", zero_version},
        {"negative auto_save_period", negative_auto_save},
        {"zero auto_save_period", zero_auto_save},
        {"NaN auto_save_period", nan_auto_save},
        {"negative load_repeat_delay", negative_repeat},
        {"negative write_cooldown", negative_cooldown},
        {"negative assume_dead_session_lock", negative_dead_lock},
        {"negative issue_last", negative_issue_last},
        {"negative critical_state_last", negative_critical_last},
        {"zero force_load_max_steps", zero_steps},
        {"negative force_load_max_steps", negative_steps},
        {"zero issue_count_for_critical_state", zero_issue_count},
        {"empty job_id", empty_job},
        {"non-UTF-8 job_id", bad_utf8_job},
        {"zero worker_threads", zero_workers},
        {"unknown URL scheme", bad_url},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* With a backend in the config: the service takes it even on failure. */
        int frees = 0;
        ps_config c;
        test_config(&c, "memory:", 1, "job-config");
        cases[i].breaker(&c);
        if (cases[i].breaker != bad_url)
            c.backend = &flaky_new("memory:", &frees)->parent;
        ps_service *s = (ps_service *)&c; /* must be reset to NULL */
        stale_error();
        int rc = ps_service_new(&s, &c);
        if (rc != PS_EINVAL)
            PS_FAIL("%s: ps_service_new returned %s", cases[i].what, ps_status_name(rc));
        assert_error(PS_EINVAL);
        PS_ASSERT(s == NULL);
        if (cases[i].breaker != bad_url && frees != 1)
            PS_FAIL("%s: the backend was freed %d times", cases[i].what, frees);
    }
}

static void test_default_job_id(void)
{
    ps_config c;
    test_config(&c, "memory:", 0, NULL);
    ps_service *a = test_service_from(&c, NULL);
    ps_service *b = test_service_from(&c, NULL);
    const char *ja = ps_service_job_id(a), *jb = ps_service_job_id(b);
    PS_ASSERT(ja && *ja && jb && *jb);
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    PS_ASSERT(strstr(ja, pid) != NULL);
    PS_ASSERT(strstr(jb, pid) != NULL);
    PS_ASSERT(strcmp(ja, jb) != 0);
    PS_ASSERT_EQ(ps_service_place_id(a), 0);
    /* The given tag is used as is. */
    test_config(&c, "memory:", 4242, "my-job");
    ps_service *t = test_service_from(&c, NULL);
    PS_ASSERT_EQ(ps_service_place_id(t), 4242);
    PS_ASSERT_STR_EQ(ps_service_job_id(t), "my-job");
    ps_service_free(a);
    ps_service_free(b);
    ps_service_free(t);
}

/* ---- IssueSignal / CriticalStateSignal during an outage -----------------------------
 */

typedef struct outage {
    flaky_backend *f;
    pthread_t host;
    const char *store;
    int issues;
    int by_key[8];
    double last_issue_at;
    int stop_after; /* > 0: switch failures off once issues reaches it */
    int critical_on, critical_off;
    int issues_at_on;
    double on_at, off_at;
} outage;

static void outage_issue(const char *message, const char *store, const char *key,
                         void *ud)
{
    outage *o = ud;
    PS_ASSERT(pthread_equal(pthread_self(), o->host));
    PS_ASSERT(message && strstr(message, "injected failure") != NULL);
    PS_ASSERT(store && key);
    PS_ASSERT_STR_EQ(store, o->store);
    if (key[0] == 'k' && key[1] >= '0' && key[1] <= '7' && !key[2])
        o->by_key[key[1] - '0']++;
    o->issues++;
    o->last_issue_at = test_clock_now(&g_clock);
    if (o->stop_after > 0 && o->issues >= o->stop_after)
        atomic_store(&o->f->fail, 0);
}

static void outage_critical(int on, void *ud)
{
    outage *o = ud;
    PS_ASSERT(pthread_equal(pthread_self(), o->host));
    if (on) {
        o->critical_on++;
        o->issues_at_on = o->issues;
        o->on_at = test_clock_now(&g_clock);
    } else {
        o->critical_off++;
        o->off_at = test_clock_now(&g_clock);
    }
}

static outage *outage_connect(ps_service *s, flaky_backend *f, const char *store)
{
    static outage o;
    memset(&o, 0, sizeof o);
    o.f = f;
    o.host = pthread_self();
    o.store = store;
    PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, s, outage_issue, &o, NULL));
    PS_ASSERT_OK(
        ps_service_critical_state_signal_connect(NULL, s, outage_critical, &o, NULL));
    return &o;
}

static void test_failed_auto_saves_and_critical_state(void)
{
    enum { N = 5 };
    flaky_backend *f = NULL;
    test_recorder rec;
    ps_service *s = flaky_service(&f, 1, "job-outage", &rec, 0);
    const char *name = test_store_name("Outage");
    outage *o = outage_connect(s, f, name);
    ps_profile_store *store = test_store(s, name);
    ps_profile *p[N];
    char key[8];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
        set_coins(p[i], i);
        PS_ASSERT_OK(ps_profile_save(p[i]));
        wait_stored_coins(s, f, name, key, i);
    }
    /* The last Data before the outage. */
    for (int i = 0; i < N; i++)
        set_coins(p[i], 100 + i);

    atomic_store(&f->fail, 1);
    for (int t = 0; t < 200 && !o->critical_on; t++)
        tick_one_second(s);
    /* Five failed auto-saves within 120 s: critical, exactly at the fifth. */
    PS_ASSERT_EQ(o->critical_on, 1);
    PS_ASSERT_EQ(o->issues_at_on, 5);
    PS_ASSERT_EQ(rec.critical_on, 1);
    PS_ASSERT(ps_service_is_critical_state(s));
    for (int i = 0; i < N; i++)
        PS_ASSERT_EQ(o->by_key[i], 1); /* one per profile: the saves were spread */
    /* Failing on: more issues, no second CriticalStateSignal(true). */
    for (int t = 0; t < 60; t++)
        tick_one_second(s);
    PS_ASSERT(o->issues >= 2 * N);
    PS_ASSERT_EQ(o->critical_on, 1);
    PS_ASSERT_EQ(o->critical_off, 0);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT_EQ(stored_coins(f, name, key), i); /* nothing written meanwhile */
        PS_ASSERT(ps_profile_is_active(p[i]));
    }

    /* Failures stop: critical state ends critical_state_last after the issue rate
     * dropped below the threshold (at most issue_last + critical_state_last after the
     * last issue), once. */
    atomic_store(&f->fail, 0);
    double stopped = test_clock_now(&g_clock);
    for (int t = 0; t < 400 && !o->critical_off; t++)
        tick_one_second(s);
    PS_ASSERT_EQ(o->critical_off, 1);
    PS_ASSERT_EQ(rec.critical_off, 1);
    PS_ASSERT(!ps_service_is_critical_state(s));
    PS_ASSERT(o->last_issue_at <= stopped);
    PS_ASSERT(o->off_at - o->last_issue_at >= 120);
    PS_ASSERT(o->off_at - o->last_issue_at <= 120 + 120 + 5);
    for (int t = 0; t < 300; t++)
        tick_one_second(s);
    PS_ASSERT_EQ(o->critical_on, 1);
    PS_ASSERT_EQ(o->critical_off, 1);
    /* IssueSignal fired once per failed call, and no data was lost. */
    PS_ASSERT_EQ(o->issues, atomic_load(&f->failures));
    PS_ASSERT_EQ(rec.issues, o->issues);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT_EQ(stored_coins(f, name, key), 100 + i);
        PS_ASSERT_OK(ps_profile_release(p[i]));
        ps_profile_free(p[i]);
    }
    ps_service_free(s);
}

typedef struct load_result {
    int done, status;
    ps_profile *profile;
    pthread_t host;
} load_result;

static void on_loaded(int status, ps_profile *profile, void *ud)
{
    load_result *r = ud;
    PS_ASSERT(pthread_equal(pthread_self(), r->host));
    r->done++;
    r->status = status;
    r->profile = profile;
}

static void test_load_retried_during_outage(void)
{
    flaky_backend *f = NULL;
    test_recorder rec;
    ps_service *s = flaky_service(&f, 1, "job-load-outage", &rec, 0);
    const char *name = test_store_name("LoadOutage");
    outage *o = outage_connect(s, f, name);
    ps_profile_store *store = test_store(s, name);

    /* Non-blocking: retried every load_repeat_delay, an issue each time. */
    atomic_store(&f->fail, 1);
    load_result r = {0, 0, NULL, pthread_self()};
    PS_ASSERT_OK(ps_store_load_profile_async(store, "k0", NULL, on_loaded, &r));
    for (int t = 0; t < 30; t++)
        tick_one_second(s);
    PS_ASSERT_EQ(r.done, 0);
    PS_ASSERT(o->issues >= 4 && o->issues <= 6); /* 30 s / 7 s */
    PS_ASSERT_EQ(o->issues, atomic_load(&f->failures));
    PS_ASSERT_EQ(o->by_key[0], o->issues);
    atomic_store(&f->fail, 0);
    for (int t = 0; t < 500 && !r.done; t++)
        tick_one_second(s);
    PS_ASSERT_EQ(r.done, 1);
    PS_ASSERT_OK(r.status);
    PS_ASSERT(ps_profile_is_active(r.profile));
    PS_ASSERT(stored_has_session(f, name, "k0"));

    /* Blocking: the same loop inside the call; the store comes back after 3 issues. */
    int before = o->issues;
    o->stop_after = before + 3;
    atomic_store(&f->fail, 1);
    double t0 = test_clock_now(&g_clock);
    ps_profile *q = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&q, store, "k1", NULL, NULL));
    PS_ASSERT_EQ(o->issues, before + 3);
    PS_ASSERT_EQ(o->by_key[1], 3);
    PS_ASSERT(test_clock_now(&g_clock) - t0 >= 3 * 7 - 0.5); /* waited between tries */
    PS_ASSERT(ps_profile_is_active(q));
    PS_ASSERT(stored_has_session(f, name, "k1"));
    PS_ASSERT_EQ(rec.issues, o->issues);

    PS_ASSERT_OK(ps_profile_release(r.profile));
    PS_ASSERT_OK(ps_profile_release(q));
    ps_profile_free(r.profile);
    ps_profile_free(q);
    ps_service_free(s);
}

static void test_release_retried_and_shutdown_waits(void)
{
    flaky_backend *f = NULL;
    test_recorder rec;
    ps_service *s = flaky_service(&f, 1, "job-release-outage", &rec, 0);
    const char *name = test_store_name("ReleaseOutage");
    outage *o = outage_connect(s, f, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, test_store(s, name), "k0", NULL, NULL));
    set_coins(p, 5);
    PS_ASSERT_OK(ps_profile_save(p));
    wait_stored_coins(s, f, name, "k0", 5);
    set_coins(p, 6); /* the last Data before the outage */

    atomic_store(&f->fail, 1);
    PS_ASSERT_OK(ps_profile_release(p));
    PS_ASSERT(!ps_profile_is_active(p));
    for (int t = 0; t < 30; t++)
        tick_one_second(s);
    /* Retried every load_repeat_delay; nothing reached the store yet. */
    PS_ASSERT(o->issues >= 4 && o->issues <= 6);
    PS_ASSERT(stored_has_session(f, name, "k0"));
    PS_ASSERT_EQ(stored_coins(f, name, "k0"), 5);

    /* Shutdown waits for the release save: the store recovers after two more
     * failures, inside the shutdown. */
    int before = o->issues;
    o->stop_after = before + 2;
    PS_ASSERT_OK(ps_service_shutdown(s));
    PS_ASSERT_EQ(o->issues, before + 2);
    PS_ASSERT(!stored_has_session(f, name, "k0"));
    PS_ASSERT_EQ(stored_coins(f, name, "k0"), 6);
    PS_ASSERT_EQ(o->issues, atomic_load(&f->failures));
    PS_ASSERT_EQ(rec.issues, o->issues);
    ps_profile_free(p);
    ps_service_free(s);
}

/* ---- shutdown ------------------------------------------------------------------- */

typedef struct locked_probe {
    ps_service *service;
    int calls;
    int locked_inside;
} locked_probe;

static void on_release_probe_locked(ps_profile *p, int64_t place, const char *job,
                                    void *ud)
{
    locked_probe *l = ud;
    (void)p;
    (void)place;
    (void)job;
    l->calls++;
    l->locked_inside += ps_service_locked(l->service) != 0;
}

static void never_loaded(int status, ps_profile *profile, void *ud)
{
    (void)status;
    (void)profile;
    (void)ud;
    PS_FAIL("done callback of a refused call ran");
}

static void gu_handler(ps_global_updates *gu, void *ud)
{
    (void)gu;
    (void)ud;
    PS_FAIL("global update handler ran after shutdown");
}

static void gu_done(int status, ps_global_updates *result, void *ud)
{
    (void)status;
    (void)result;
    (void)ud;
    PS_FAIL("global update done callback ran after shutdown");
}

#define ASSERT_SHUTDOWN(call)                                                            \
    do {                                                                                 \
        stale_error();                                                                   \
        PS_ASSERT_STATUS(call, PS_ESHUTDOWN);                                            \
        assert_error(PS_ESHUTDOWN);                                                      \
    } while (0)

static void test_shutdown(void)
{
    enum { N = 3 };
    flaky_backend *f = NULL;
    test_recorder rec;
    ps_service *s = flaky_service(&f, 1, "job-shutdown", &rec, 0);
    const char *name = test_store_name("Shutdown");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p[N];
    locked_probe probe = {s, 0, 0};
    char key[8];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
        set_coins(p[i], 10 + i);
        PS_ASSERT_OK(ps_profile_listen_to_release(NULL, p[i], on_release_probe_locked,
                                                  &probe, NULL));
    }
    PS_ASSERT(!ps_service_locked(s));
    PS_ASSERT_OK(ps_service_shutdown(s));
    PS_ASSERT(ps_service_locked(s));
    /* Every profile was released (ServiceLocked already set) and saved. */
    PS_ASSERT_EQ(probe.calls, N);
    PS_ASSERT_EQ(probe.locked_inside, N);
    char *before[N];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT(!ps_profile_is_active(p[i]));
        PS_ASSERT(!stored_has_session(f, name, key));
        PS_ASSERT_EQ(stored_coins(f, name, key), 10 + i);
        before[i] = flaky_raw(f, name, key);
    }
    int updates = atomic_load(&f->updates);

    /* Every store call afterwards: PS_ESHUTDOWN with a message, nothing stored. */
    ps_profile *q = (ps_profile *)&q;
    ASSERT_SHUTDOWN(ps_store_load_profile(&q, store, "k0", NULL, NULL));
    PS_ASSERT(q == NULL);
    ASSERT_SHUTDOWN(ps_store_load_profile(&q, store, "fresh", NULL, NULL));
    ASSERT_SHUTDOWN(ps_store_load_profile_async(store, "k1", NULL, never_loaded, NULL));
    ASSERT_SHUTDOWN(ps_store_view_profile(&q, store, "k0"));
    PS_ASSERT(q == NULL);
    ASSERT_SHUTDOWN(ps_store_view_profile_async(store, "k0", never_loaded, NULL));
    ASSERT_SHUTDOWN(ps_store_global_update_profile(NULL, store, "k0", gu_handler, NULL));
    ASSERT_SHUTDOWN(
        ps_store_global_update_profile_async(store, "k0", gu_handler, gu_done, NULL));
    ps_profile_store *other = (ps_profile_store *)&other;
    json_t *tmpl = test_template();
    ASSERT_SHUTDOWN(ps_service_get_profile_store(&other, s, name, tmpl));
    ASSERT_SHUTDOWN(ps_service_get_profile_store(&other, s, "AnotherStore", tmpl));
    json_decref(tmpl);
    /* Profile calls: released; Release is harmless. */
    stale_error();
    PS_ASSERT_STATUS(ps_profile_save(p[0]), PS_ERELEASED);
    assert_error(PS_ERELEASED);
    PS_ASSERT_OK(ps_profile_release(p[0]));
    PS_ASSERT_OK(ps_service_shutdown(s)); /* twice */
    for (int t = 0; t < 70; t++)
        tick_one_second(s); /* no auto-save after shutdown */
    PS_ASSERT_EQ(atomic_load(&f->updates), updates);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        char *after = flaky_raw(f, name, key);
        PS_ASSERT_STR_EQ(before[i], after);
        free(after);
        free(before[i]);
        ps_profile_free(p[i]);
    }
    json_t *fresh = flaky_doc(f, name, "fresh");
    PS_ASSERT(fresh == NULL);
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 0);
}

static void open_gate(ps_profile *p, int64_t place, const char *job, void *ud)
{
    (void)p;
    (void)place;
    (void)job;
    flaky_backend *f = ud;
    atomic_store(&f->gate_closed, 0);
}

/* The async load passes one userdata to the handler and to done (the load_result),
 * so the handler counts its calls here. */
static int g_repeats;

static ps_not_released_action always_repeat(int64_t place, const char *job, void *ud)
{
    (void)ud;
    PS_ASSERT_EQ(place, 999);
    PS_ASSERT_STR_EQ(job, "job-other");
    g_repeats++;
    return PS_REPEAT;
}

/* Three loads are in flight when shutdown starts: "taken" already holds the session
 * in the store (its result is not yet applied); "gated" has not read the store yet
 * (its update waits at the gate until ServiceLocked is set); "held" waits to retry
 * because another server holds it. All end PS_ESHUTDOWN; none leaves a session of
 * ours behind, and the other server's session is untouched. */
static void test_shutdown_with_loads_in_flight(void)
{
    flaky_backend *f = NULL;
    test_recorder rec;
    ps_service *s = flaky_service(&f, 1, "job-inflight", &rec, 0);
    const char *name = test_store_name("InFlight");
    ps_profile_store *store = test_store(s, name);
    ps_profile *anchor = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&anchor, store, "anchor", NULL, NULL));
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, anchor, open_gate, f, NULL));

    load_result taken = {0, 0, NULL, pthread_self()};
    load_result gated = {0, 0, NULL, pthread_self()};
    load_result held = {0, 0, NULL, pthread_self()};
    char held_doc[256];
    snprintf(held_doc, sizeof held_doc,
             "{\"Data\":{},\"MetaData\":{\"ProfileCreateTime\":1,\"SessionLoadCount\":1,"
             "\"ActiveSession\":[999,\"job-other\"],\"MetaTags\":{},\"LastUpdate\":%lld},"
             "\"GlobalUpdates\":[0,[]]}",
             (long long)test_clock_now(&g_clock));
    flaky_put(f, name, "held", held_doc);
    g_repeats = 0;
    PS_ASSERT_OK(
        ps_store_load_profile_async(store, "held", always_repeat, on_loaded, &held));
    test_settle_until(s, &g_repeats, 10000);
    PS_ASSERT_EQ(g_repeats, 1); /* now waiting load_repeat_delay to retry */
    char *held_before = flaky_raw(f, name, "held");
    int updates = atomic_load(&f->updates);
    PS_ASSERT_OK(ps_store_load_profile_async(store, "taken", NULL, on_loaded, &taken));
    for (int i = 0; i < 50000 && atomic_load(&f->updates) == updates; i++)
        usleep(100);
    PS_ASSERT_EQ(atomic_load(&f->updates), updates + 1);
    PS_ASSERT(stored_has_session(f, name, "taken")); /* taken in the store */

    snprintf(f->gate_key, sizeof f->gate_key, "gated");
    atomic_store(&f->gate_closed, 1);
    PS_ASSERT_OK(ps_store_load_profile_async(store, "gated", NULL, on_loaded, &gated));
    for (int i = 0; i < 50000 && !atomic_load(&f->at_gate); i++)
        usleep(100);
    PS_ASSERT(atomic_load(&f->at_gate));
    PS_ASSERT_EQ(taken.done + gated.done, 0);

    PS_ASSERT_OK(ps_service_shutdown(s));
    PS_ASSERT_EQ(taken.done, 1);
    PS_ASSERT_EQ(taken.status, PS_ESHUTDOWN);
    PS_ASSERT(taken.profile == NULL);
    PS_ASSERT_EQ(gated.done, 1);
    PS_ASSERT_EQ(gated.status, PS_ESHUTDOWN);
    PS_ASSERT(gated.profile == NULL);
    PS_ASSERT(!stored_has_session(f, name, "taken"));
    PS_ASSERT(!stored_has_session(f, name, "gated"));
    PS_ASSERT(!stored_has_session(f, name, "anchor"));
    PS_ASSERT_EQ(held.done, 1);
    PS_ASSERT_EQ(held.status, PS_ESHUTDOWN);
    PS_ASSERT_EQ(g_repeats, 1);
    char *held_after = flaky_raw(f, name, "held");
    PS_ASSERT_STR_EQ(held_before, held_after);
    free(held_before);
    free(held_after);
    ps_profile_free(anchor);
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 0);
}

/* ---- listeners: host thread, re-entrancy refused --------------------------------- */

typedef struct reentry {
    ps_service *service;
    ps_profile_store *store;
    pthread_t host;
    int calls;   /* listener invocations that tried re-entering */
    int refused; /* of the re-entrant calls, how many got PS_EINVAL */
    int attempted;
} reentry;

/* From inside a listener: every call that would run the tick must be refused. */
static void try_reenter(reentry *r)
{
    PS_ASSERT(pthread_equal(pthread_self(), r->host));
    r->calls++;
    ps_profile *q = (ps_profile *)r;
    int rcs[5];
    rcs[0] = ps_service_update(r->service);
    PS_ASSERT(strstr(ps_error_last()->message, "listener") != NULL);
    rcs[1] = ps_store_load_profile(&q, r->store, "reentrant", NULL, NULL);
    PS_ASSERT(q == NULL);
    rcs[2] = ps_store_view_profile(&q, r->store, "reentrant");
    PS_ASSERT(q == NULL);
    rcs[3] =
        ps_store_global_update_profile(NULL, r->store, "reentrant", gu_handler, NULL);
    rcs[4] = ps_service_shutdown(r->service);
    for (int i = 0; i < 5; i++) {
        r->attempted++;
        if (rcs[i] == PS_EINVAL)
            r->refused++;
        else
            fprintf(stderr, "re-entrant call %d inside a listener returned %s\n", i,
                    ps_status_name(rcs[i]));
    }
}

static void reenter_issue(const char *m, const char *st, const char *k, void *ud)
{
    (void)m;
    (void)st;
    (void)k;
    try_reenter(ud);
}

static void reenter_corruption(const char *st, const char *k, void *ud)
{
    (void)st;
    (void)k;
    try_reenter(ud);
}

static void reenter_critical(int on, void *ud)
{
    (void)on;
    try_reenter(ud);
}

static void reenter_release(ps_profile *p, int64_t place, const char *job, void *ud)
{
    (void)p;
    (void)place;
    (void)job;
    try_reenter(ud);
}

static ps_not_released_action reenter_handler(int64_t place, const char *job, void *ud)
{
    PS_ASSERT_EQ(place, 999);
    PS_ASSERT_STR_EQ(job, "job-other");
    try_reenter(ud);
    return PS_CANCEL;
}

typedef struct reenter_load {
    reentry *r;
    load_result result;
} reenter_load;

static void reenter_done(int status, ps_profile *profile, void *ud)
{
    reenter_load *l = ud;
    try_reenter(l->r);
    on_loaded(status, profile, &l->result);
}

static void test_listeners_on_host_thread_and_reentrancy(void)
{
    flaky_backend *f = NULL;
    test_recorder rec; /* its listeners fail the test off the host thread */
    /* One issue is enough for critical state here, so its listener runs too. */
    ps_service *s = flaky_service(&f, 1, "job-reenter", &rec, 1);
    const char *name = test_store_name("Reenter");
    ps_profile_store *store = test_store(s, name);
    reentry r = {s, store, pthread_self(), 0, 0, 0};
    PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, s, reenter_issue, &r, NULL));
    PS_ASSERT_OK(
        ps_service_corruption_signal_connect(NULL, s, reenter_corruption, &r, NULL));
    PS_ASSERT_OK(
        ps_service_critical_state_signal_connect(NULL, s, reenter_critical, &r, NULL));

    /* Done callback of an async load. */
    reenter_load l = {&r, {0, 0, NULL, pthread_self()}};
    PS_ASSERT_OK(ps_store_load_profile_async(store, "k", NULL, reenter_done, &l));
    test_settle_until(s, &l.result.done, 10000);
    PS_ASSERT_EQ(l.result.done, 1);
    PS_ASSERT_OK(l.result.status);
    ps_profile *p = l.result.profile;
    PS_ASSERT_EQ(r.calls, 1);

    /* IssueSignal (and CriticalStateSignal) from a failing save. */
    atomic_store(&f->fail, 1);
    PS_ASSERT_OK(ps_profile_save(p));
    test_settle_until(s, &rec.issues, 10000);
    atomic_store(&f->fail, 0);
    PS_ASSERT_EQ(rec.issues, 1);
    PS_ASSERT_EQ(rec.critical_on, 1);
    PS_ASSERT_EQ(r.calls, 3);

    /* CorruptionSignal from loading a corrupt document. */
    flaky_put(f, name, "bad", "{\"Data\": oops");
    ps_profile *bad = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&bad, store, "bad", NULL, NULL));
    PS_ASSERT_EQ(rec.corruptions, 1);
    PS_ASSERT_EQ(r.calls, 4);

    /* The not_released handler. */
    char held[256];
    snprintf(held, sizeof held,
             "{\"Data\":{},\"MetaData\":{\"ProfileCreateTime\":1,\"SessionLoadCount\":1,"
             "\"ActiveSession\":[999,\"job-other\"],\"MetaTags\":{},\"LastUpdate\":%lld},"
             "\"GlobalUpdates\":[0,[]]}",
             (long long)test_clock_now(&g_clock));
    flaky_put(f, name, "held", held);
    ps_profile *h = NULL;
    PS_ASSERT_STATUS(ps_store_load_profile(&h, store, "held", reenter_handler, &r),
                     PS_ECANCELLED);
    PS_ASSERT_EQ(r.calls, 5);

    /* ListenToRelease, from Release (outside any tick) and at once on a released one. */
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, p, reenter_release, &r, NULL));
    PS_ASSERT_OK(ps_profile_release(p));
    PS_ASSERT_EQ(r.calls, 6);

    PS_ASSERT_EQ(r.refused, r.attempted);
    PS_ASSERT(!ps_service_locked(s)); /* the refused shutdowns did nothing */

    /* The service carries on. */
    PS_ASSERT_OK(ps_service_update(s));
    ps_profile *again = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&again, store, "k", NULL, NULL));
    set_coins(again, 77);
    PS_ASSERT_OK(ps_profile_release(again));
    PS_ASSERT_OK(ps_profile_release(bad));
    PS_ASSERT_OK(ps_service_shutdown(s));
    PS_ASSERT_EQ(stored_coins(f, name, "k"), 77);
    PS_ASSERT(!stored_has_session(f, name, "k"));
    ps_profile_free(p);
    ps_profile_free(bad);
    ps_profile_free(again);
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 1);
}

/* ---- connections ----------------------------------------------------------------- */

typedef struct conn_log {
    int calls;
    int frees;
    ps_connection *self;
} conn_log;

static void conn_issue(const char *m, const char *st, const char *k, void *ud)
{
    (void)m;
    (void)st;
    (void)k;
    ((conn_log *)ud)->calls++;
}

static void conn_issue_self(const char *m, const char *st, const char *k, void *ud)
{
    conn_log *c = ud;
    conn_issue(m, st, k, ud);
    ps_connection_disconnect(c->self);
    ps_connection_disconnect(c->self);
}

static void conn_critical(int on, void *ud)
{
    (void)on;
    ((conn_log *)ud)->calls++;
}

static void conn_corruption(const char *st, const char *k, void *ud)
{
    (void)st;
    (void)k;
    ((conn_log *)ud)->calls++;
}

static void conn_free(void *ud)
{
    ((conn_log *)ud)->frees++;
}

static void test_connection_disconnect(void)
{
    flaky_backend *f = NULL;
    test_recorder rec;
    ps_service *s = flaky_service(&f, 1, "job-connections", &rec, 0);
    const char *name = test_store_name("Connections");
    conn_log gone = {0}, self = {0}, kept = {0}, critical = {0}, corruption = {0};
    ps_connection *c_gone = NULL;
    PS_ASSERT_OK(
        ps_service_issue_signal_connect(&c_gone, s, conn_issue, &gone, conn_free));
    PS_ASSERT_OK(ps_service_issue_signal_connect(&self.self, s, conn_issue_self, &self,
                                                 conn_free));
    PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, s, conn_issue, &kept, conn_free));
    PS_ASSERT_OK(ps_service_critical_state_signal_connect(NULL, s, conn_critical,
                                                          &critical, conn_free));
    PS_ASSERT_OK(ps_service_corruption_signal_connect(NULL, s, conn_corruption,
                                                      &corruption, conn_free));
    ps_connection_disconnect(c_gone);
    ps_connection_disconnect(c_gone);
    ps_connection_disconnect(NULL);
    PS_ASSERT_EQ(gone.frees, 1);

    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, test_store(s, name), "k", NULL, NULL));
    atomic_store(&f->fail, 1);
    for (int i = 0; i < 2; i++) {
        int want = rec.issues + 1;
        PS_ASSERT_OK(ps_profile_save(p));
        for (int k = 0; k < 50000 && rec.issues < want; k++) {
            PS_ASSERT_OK(ps_service_update(s));
            usleep(100);
        }
        PS_ASSERT_EQ(rec.issues, want);
    }
    atomic_store(&f->fail, 0);
    PS_ASSERT_EQ(gone.calls, 0);
    PS_ASSERT_EQ(self.calls, 1); /* disconnected itself during the first issue */
    PS_ASSERT_EQ(self.frees, 1);
    PS_ASSERT_EQ(kept.calls, 2);
    PS_ASSERT_EQ(kept.frees, 0);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(s);
    /* Freeing the service ran each remaining free_userdata exactly once. */
    PS_ASSERT_EQ(gone.frees, 1);
    PS_ASSERT_EQ(self.frees, 1);
    PS_ASSERT_EQ(kept.frees, 1);
    PS_ASSERT_EQ(critical.frees, 1);
    PS_ASSERT_EQ(corruption.frees, 1);
    PS_ASSERT_EQ(corruption.calls, 0);
}

/* ---- bad arguments -------------------------------------------------------------------
 */

static void never_issue(const char *m, const char *st, const char *k, void *ud)
{
    (void)m;
    (void)st;
    (void)k;
    (void)ud;
    PS_FAIL("listener of a failed connect ran");
}

static void never_corruption(const char *st, const char *k, void *ud)
{
    (void)st;
    (void)k;
    (void)ud;
    PS_FAIL("listener of a failed connect ran");
}

static void never_critical(int on, void *ud)
{
    (void)on;
    (void)ud;
    PS_FAIL("listener of a failed connect ran");
}

#define ASSERT_EINVAL(call)                                                              \
    do {                                                                                 \
        stale_error();                                                                   \
        PS_ASSERT_STATUS(call, PS_EINVAL);                                               \
        assert_error(PS_EINVAL);                                                         \
    } while (0)

static void test_bad_args(void)
{
    /* A NULL service. */
    ASSERT_EINVAL(ps_service_update(NULL));
    ASSERT_EINVAL(ps_service_shutdown(NULL));
    (void)ps_service_locked(NULL); /* no crash */
    PS_ASSERT_EQ(ps_service_place_id(NULL), 0);
    PS_ASSERT(ps_service_job_id(NULL) == NULL);
    PS_ASSERT_EQ(ps_service_is_critical_state(NULL), 0);
    ps_service_free(NULL);
    conn_log l = {0};
    ps_connection *c = NULL;
    ASSERT_EINVAL(ps_service_issue_signal_connect(&c, NULL, never_issue, &l, conn_free));
    ASSERT_EINVAL(
        ps_service_corruption_signal_connect(&c, NULL, never_corruption, &l, conn_free));
    ASSERT_EINVAL(ps_service_critical_state_signal_connect(&c, NULL, never_critical, &l,
                                                           conn_free));
    PS_ASSERT(c == NULL);
    PS_ASSERT_EQ(l.frees, 0);
    ps_profile_store *store = NULL;
    json_t *tmpl = test_template();
    ASSERT_EINVAL(ps_service_get_profile_store(&store, NULL, "S", tmpl));
    PS_ASSERT(ps_store_name(NULL) == NULL);
    ASSERT_EINVAL(ps_store_load_profile_async(NULL, "k", NULL, never_loaded, NULL));

    /* ps_service_new without out or config; a config's backend is still taken. */
    int frees = 0;
    ps_config config;
    test_config(&config, g_url, 1, "job-bad");
    config.backend = &flaky_new("memory:", &frees)->parent;
    ASSERT_EINVAL(ps_service_new(NULL, &config));
    PS_ASSERT_EQ(frees, 1);
    ps_service *s = NULL;
    ASSERT_EINVAL(ps_service_new(&s, NULL));
    PS_ASSERT(s == NULL);
    /* A backend with a bad version or without a required member. */
    flaky_backend *f = flaky_new("memory:", &frees);
    f->parent.version = PS_BACKEND_VERSION + 1;
    test_config(&config, g_url, 1, "job-bad");
    config.backend = &f->parent;
    ASSERT_EINVAL(ps_service_new(&s, &config));
    PS_ASSERT(s == NULL);
    PS_ASSERT_EQ(frees, 2);
    f = flaky_new("memory:", &frees);
    f->parent.update = NULL;
    config.backend = &f->parent;
    ASSERT_EINVAL(ps_service_new(&s, &config));
    PS_ASSERT_EQ(frees, 3);

    /* A live service: NULL listeners and bad store names; nothing is stored. */
    test_recorder rec;
    s = test_service(g_url, 1, "job-bad", &rec);
    ASSERT_EINVAL(ps_service_issue_signal_connect(&c, s, NULL, &l, conn_free));
    ASSERT_EINVAL(ps_service_corruption_signal_connect(&c, s, NULL, &l, conn_free));
    ASSERT_EINVAL(ps_service_critical_state_signal_connect(&c, s, NULL, &l, conn_free));
    PS_ASSERT_EQ(l.frees, 0);
    ASSERT_EINVAL(ps_service_get_profile_store(NULL, s, "S", tmpl));
    ASSERT_EINVAL(ps_service_get_profile_store(&store, s, NULL, tmpl));
    ASSERT_EINVAL(ps_service_get_profile_store(&store, s, "", tmpl));
    ASSERT_EINVAL(ps_service_get_profile_store(&store, s, "bad\xff", tmpl));
    ASSERT_EINVAL(ps_service_get_profile_store(&store, s, "S", NULL));
    PS_ASSERT_EQ(ps_service_locked(s), 0);
    ps_service_free(s);
    json_decref(tmpl);
    PS_ASSERT_EQ(rec.issues, 0);

    /* Status names. */
    static const struct {
        int code;
        const char *name;
    } names[] = {{PS_OK, "PS_OK"},
                 {PS_EINVAL, "PS_EINVAL"},
                 {PS_ENOTFOUND, "PS_ENOTFOUND"},
                 {PS_ELOCKED, "PS_ELOCKED"},
                 {PS_ECONFLICT, "PS_ECONFLICT"},
                 {PS_ECORRUPT, "PS_ECORRUPT"},
                 {PS_ETOOBIG, "PS_ETOOBIG"},
                 {PS_ERELEASED, "PS_ERELEASED"},
                 {PS_ESHUTDOWN, "PS_ESHUTDOWN"},
                 {PS_EBACKEND, "PS_EBACKEND"},
                 {PS_ENOMEM, "PS_ENOMEM"},
                 {PS_ECANCELLED, "PS_ECANCELLED"},
                 {PS_EVIEW, "PS_EVIEW"}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        PS_ASSERT_STR_EQ(ps_status_name(names[i].code), names[i].name);
    PS_ASSERT_STR_EQ(ps_status_name(-1000), "PS_UNKNOWN");
    PS_ASSERT_STR_EQ(ps_status_name(5), "PS_UNKNOWN");
    PS_ASSERT(ps_error_last() != NULL && ps_error_last()->message != NULL);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    PS_RUN(test_config_defaults);
    PS_RUN(test_bad_configs);
    PS_RUN(test_default_job_id);
    PS_RUN(test_failed_auto_saves_and_critical_state);
    PS_RUN(test_load_retried_during_outage);
    PS_RUN(test_release_retried_and_shutdown_waits);
    PS_RUN(test_shutdown);
    PS_RUN(test_shutdown_with_loads_in_flight);
    PS_RUN(test_listeners_on_host_thread_and_reentrancy);
    PS_RUN(test_connection_disconnect);
    PS_RUN(test_bad_args);
    printf("ok\n");
    return 0;
}
