/* test_store.c — ProfileStore semantics: load (template, counts, handlers, force load,
 * steal, dead locks, concurrent loads), view, corruption, async loads, shutdown.
 * Run as `test_store URL`; every server is a service with its own session tag on the
 * same store (memory:NAME shares one in-process store between services). */
#include "support.h"

static int raw_put_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    (void)current;
    const char *text = ud;
    return ps_bytes_set(&out->doc, text, strlen(text));
}

/* Stores @p text as the raw value of a key, bypassing the library. */
static void raw_put(const char *store, const char *key, const char *text)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    PS_ASSERT_OK(b->update(b, store, key, raw_put_transform, (void *)text));
    ps_backend_free(b);
}

static char *raw_get(const char *store, const char *key)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    ps_bytes bytes = {NULL, 0};
    int rc = b->get(&bytes, b, store, key);
    ps_backend_free(b);
    return rc == PS_OK ? bytes.data : NULL;
}

static json_t *stored_meta(const char *store, const char *key)
{
    json_t *doc = test_stored_doc(g_url, store, key);
    json_t *meta = json_incref(json_object_get(doc, "MetaData"));
    json_decref(doc);
    return meta;
}

/* ---- a new profile ------------------------------------------------------------ */

static void test_new_profile_gets_template(void)
{
    test_recorder rec;
    ps_service *s = test_service(g_url, 1000, "job-A", &rec);
    const char *name = test_store_name("NewProfile");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "Player_1", NULL, NULL));
    json_t *tmpl = test_template();
    PS_ASSERT(json_equal(ps_profile_data(p), tmpl));
    PS_ASSERT_EQ(ps_profile_session_load_count(p), 1);
    PS_ASSERT_EQ((long long)ps_profile_create_time(p), 1700000000LL / 1 * 0 +
                 (long long)test_clock_now(&g_clock));
    int64_t place = 0;
    const char *job = NULL;
    PS_ASSERT(ps_profile_active_session(p, &place, &job));
    PS_ASSERT_EQ(place, 1000);
    PS_ASSERT_STR_EQ(job, "job-A");
    PS_ASSERT(ps_profile_is_active(p));

    /* The stored layout is ProfileService's (SEMANTICS.md §2). */
    json_t *doc = test_stored_doc(g_url, name, "Player_1");
    PS_ASSERT(json_equal(json_object_get(doc, "Data"), tmpl));
    json_t *meta = json_object_get(doc, "MetaData");
    PS_ASSERT_EQ(json_integer_value(json_object_get(meta, "SessionLoadCount")), 1);
    PS_ASSERT(json_is_array(json_object_get(meta, "ActiveSession")));
    PS_ASSERT(json_is_integer(json_object_get(meta, "LastUpdate")));
    PS_ASSERT(json_is_object(json_object_get(meta, "MetaTags")));
    PS_ASSERT(json_is_array(json_object_get(doc, "GlobalUpdates")));
    PS_ASSERT(json_object_get(doc, "WasCorrupted") == NULL);
    json_decref(doc);

    PS_ASSERT_OK(ps_profile_release(p));
    PS_ASSERT(!ps_profile_is_active(p));
    PS_ASSERT_OK(ps_service_shutdown(s));
    doc = test_stored_doc(g_url, name, "Player_1");
    meta = json_object_get(doc, "MetaData");
    PS_ASSERT(json_object_get(meta, "ActiveSession") == NULL);
    PS_ASSERT(json_is_false(json_object_get(doc, "WasCorrupted")));
    json_decref(doc);
    json_decref(tmpl);
    ps_profile_free(p);
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 0);
}

static void test_load_count_and_create_time(void)
{
    ps_service *s = test_service(g_url, 1, "job-count", NULL);
    ps_profile_store *store = test_store(s, test_store_name("Counts"));
    double created = test_clock_now(&g_clock);
    for (int i = 1; i <= 3; i++) {
        ps_profile *p = NULL;
        PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
        PS_ASSERT_EQ(ps_profile_session_load_count(p), i);
        PS_ASSERT_EQ((long long)ps_profile_create_time(p), (long long)created);
        json_object_set_new(ps_profile_data(p), "Coins", json_integer(i * 10));
        PS_ASSERT_OK(ps_profile_release(p));
        ps_profile_free(p);
        test_clock_advance(&g_clock, 100);
    }
    ps_profile *v = NULL;
    PS_ASSERT_OK(ps_store_view_profile(&v, store, "k"));
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(v), "Coins")), 30);
    ps_profile_free(v);
    ps_service_free(s);
}

static void test_already_loaded_is_an_error(void)
{
    ps_service *s = test_service(g_url, 1, "job-twice", NULL);
    ps_profile_store *store = test_store(s, test_store_name("Twice"));
    ps_profile *p = NULL, *q = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    PS_ASSERT_STATUS(ps_store_load_profile(&q, store, "k", NULL, NULL), PS_ELOCKED);
    PS_ASSERT(q == NULL);
    PS_ASSERT(strstr(ps_error_last()->message, "already loaded") != NULL);
    PS_ASSERT_OK(ps_profile_release(p));
    /* Load right after Release: queued behind the release write, so it succeeds. */
    PS_ASSERT_OK(ps_store_load_profile(&q, store, "k", NULL, NULL));
    PS_ASSERT_EQ(ps_profile_session_load_count(q), 2);
    ps_profile_free(p);
    ps_profile_free(q);
    ps_service_free(s);
}

/* ---- another server holds it ------------------------------------------------------- */

typedef struct handler_log {
    int calls;
    int64_t place;
    char job[64];
    ps_not_released_action answers[16];
} handler_log;

static ps_not_released_action scripted_handler(int64_t place, const char *job, void *ud)
{
    handler_log *h = ud;
    h->place = place;
    snprintf(h->job, sizeof h->job, "%s", job);
    return h->answers[h->calls++];
}

static void test_handler_cancel_and_repeat(void)
{
    ps_service *a = test_service(g_url, 1000, "job-A", NULL);
    ps_service *b = test_service(g_url, 2000, "job-B", NULL);
    const char *name = test_store_name("Handlers");
    ps_profile *pa = NULL, *pb = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&pa, test_store(a, name), "k", NULL, NULL));
    ps_profile_store *sb = test_store(b, name);

    handler_log h = {0, 0, "", {PS_CANCEL}};
    PS_ASSERT_STATUS(ps_store_load_profile(&pb, sb, "k", scripted_handler, &h),
                     PS_ECANCELLED);
    PS_ASSERT_EQ(h.calls, 1);
    PS_ASSERT_EQ(h.place, 1000);
    PS_ASSERT_STR_EQ(h.job, "job-A");

    handler_log r = {0, 0, "", {PS_REPEAT, PS_REPEAT, PS_REPEAT, PS_CANCEL}};
    double t0 = test_clock_now(&g_clock);
    PS_ASSERT_STATUS(ps_store_load_profile(&pb, sb, "k", scripted_handler, &r),
                     PS_ECANCELLED);
    PS_ASSERT_EQ(r.calls, 4);
    PS_ASSERT(test_clock_now(&g_clock) - t0 >= 3 * 7); /* load_repeat_delay apart */
    /* Nothing B did changed A's ownership. */
    json_t *meta = stored_meta(name, "k");
    PS_ASSERT(json_object_get(meta, "ForceLoadSession") == NULL);
    PS_ASSERT_EQ(json_integer_value(json_object_get(meta, "SessionLoadCount")), 1);
    json_decref(meta);
    PS_ASSERT(ps_profile_is_active(pa));
    ps_profile_free(pa);
    ps_service_free(a);
    ps_service_free(b);
}

typedef struct release_log {
    int calls;
    int64_t place;
    char job[64];
} release_log;

static void on_release(ps_profile *p, int64_t place, const char *job, void *ud)
{
    release_log *r = ud;
    (void)p;
    r->calls++;
    r->place = place;
    snprintf(r->job, sizeof r->job, "%s", job ? job : "(null)");
}

typedef struct load_result {
    int done, status;
    ps_profile *profile;
    pthread_t host;
} load_result;

static void on_loaded(int status, ps_profile *profile, void *ud)
{
    load_result *r = ud;
    if (!pthread_equal(pthread_self(), r->host))
        PS_FAIL("done callback ran off the host thread");
    r->done = 1;
    r->status = status;
    r->profile = profile;
}

/* B force-loads while A is alive and ticking: A hands over on its next auto-save. */
static void test_force_load_live_owner(void)
{
    ps_service *a = test_service(g_url, 1000, "job-A", NULL);
    ps_service *b = test_service(g_url, 2000, "job-B", NULL);
    const char *name = test_store_name("ForceLive");
    ps_profile *pa = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&pa, test_store(a, name), "k", NULL, NULL));
    release_log rl = {0};
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, pa, on_release, &rl, NULL));
    json_object_set_new(ps_profile_data(pa), "Coins", json_integer(77));

    load_result lr = {0, 0, NULL, pthread_self()};
    PS_ASSERT_OK(ps_store_load_profile_async(test_store(b, name), "k", NULL, on_loaded, &lr));
    for (int i = 0; i < 400 && !lr.done; i++) {
        PS_ASSERT_OK(ps_service_update(a));
        PS_ASSERT_OK(ps_service_update(b));
        test_clock_advance(&g_clock, 0.5);
        usleep(500);
    }
    PS_ASSERT(lr.done);
    PS_ASSERT_OK(lr.status);
    PS_ASSERT_EQ(rl.calls, 1);
    PS_ASSERT_EQ(rl.place, 2000); /* handed to B's force load */
    PS_ASSERT(!ps_profile_is_active(pa));
    /* B has A's last data and a new session count. */
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(lr.profile), "Coins")),
                 77);
    PS_ASSERT_EQ(ps_profile_session_load_count(lr.profile), 2);
    /* A's later writes never overwrite B. */
    json_object_set_new(ps_profile_data(pa), "Coins", json_integer(-1));
    PS_ASSERT_STATUS(ps_profile_save(pa), PS_ERELEASED);
    json_object_set_new(ps_profile_data(lr.profile), "Coins", json_integer(78));
    PS_ASSERT_OK(ps_profile_release(lr.profile));
    ps_service_free(a);
    ps_service_free(b);
    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(json_integer_value(json_object_get(json_object_get(doc, "Data"), "Coins")),
                 78);
    json_decref(doc);
    ps_profile_free(pa);
    ps_profile_free(lr.profile);
}

/* A is stuck (never ticks): B steals after force_load_max_steps; A's late save is
 * fenced out and A learns it lost the session. */
static void test_force_load_steals_from_stuck_owner(void)
{
    ps_service *a = test_service(g_url, 1000, "job-A", NULL);
    ps_service *b = test_service(g_url, 2000, "job-B", NULL);
    const char *name = test_store_name("ForceSteal");
    ps_profile *pa = NULL, *pb = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&pa, test_store(a, name), "k", NULL, NULL));
    release_log rl = {0};
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, pa, on_release, &rl, NULL));
    double t0 = test_clock_now(&g_clock);
    PS_ASSERT_OK(ps_store_load_profile(&pb, test_store(b, name), "k", NULL, NULL));
    double took = test_clock_now(&g_clock) - t0;
    PS_ASSERT(took >= 8 * 7 && took < 8 * 7 + 20); /* ≈ 63 s like ProfileService */
    PS_ASSERT_EQ(ps_profile_session_load_count(pb), 2);
    json_object_set_new(ps_profile_data(pb), "Coins", json_integer(5));
    PS_ASSERT_OK(ps_profile_save(pb));
    test_clock_advance(&g_clock, 1);

    /* A wakes up and saves: nothing is written, A is released locally. */
    json_object_set_new(ps_profile_data(pa), "Coins", json_integer(999));
    PS_ASSERT_OK(ps_profile_save(pa));
    int released = 0;
    for (int i = 0; i < 2000 && !rl.calls; i++) {
        ps_service_update(a);
        ps_service_update(b);
        usleep(500);
    }
    (void)released;
    PS_ASSERT_EQ(rl.calls, 1);
    PS_ASSERT_EQ(rl.place, 2000);
    PS_ASSERT_STR_EQ(rl.job, "job-B");
    PS_ASSERT_OK(ps_profile_release(pb));
    ps_service_free(b);
    ps_service_free(a);
    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(json_integer_value(json_object_get(json_object_get(doc, "Data"), "Coins")), 5);
    json_decref(doc);
    ps_profile_free(pa);
    ps_profile_free(pb);
}

static ps_not_released_action never_called(int64_t place, const char *job, void *ud)
{
    (void)place;
    (void)job;
    (*(int *)ud)++;
    return PS_CANCEL;
}

/* A crashed (exits without releasing): after AssumeDeadSessionLock the lock is taken
 * without asking, with the last saved data. */
static void test_dead_lock_expires(void)
{
    const char *name = test_store_name("DeadLock");
    ps_service *a = test_service(g_url, 1000, "job-A", NULL);
    ps_profile *pa = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&pa, test_store(a, name), "k", NULL, NULL));
    json_object_set_new(ps_profile_data(pa), "Coins", json_integer(42));
    PS_ASSERT_OK(ps_profile_save(pa));
    int saved = 0;
    for (int i = 0; i < 2000 && !saved; i++) {
        ps_service_update(a);
        json_t *doc = test_stored_doc(g_url, name, "k");
        saved = json_integer_value(json_object_get(json_object_get(doc, "Data"),
                                                   "Coins")) == 42;
        json_decref(doc);
        usleep(500);
    }
    PS_ASSERT(saved);
    /* "Crash": A vanishes without releasing (its handle is never used again). */
    ps_service *b = test_service(g_url, 2000, "job-B", NULL);
    int calls = 0;
    ps_profile *pb = NULL;
    PS_ASSERT_STATUS(ps_store_load_profile(&pb, test_store(b, name), "k", never_called,
                                           &calls),
                     PS_ECANCELLED);
    PS_ASSERT_EQ(calls, 1);
    test_clock_advance(&g_clock, 30 * 60 + 1);
    PS_ASSERT_OK(ps_store_load_profile(&pb, test_store(b, name), "k", never_called, &calls));
    PS_ASSERT_EQ(calls, 1);
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(pb), "Coins")), 42);
    ps_profile_release(pb);
    ps_profile_free(pb);
    ps_service_free(b);
    /* Free A last, without letting it write: its release is fenced by the count. */
    ps_profile_free(pa);
    ps_service_free(a);
    json_t *meta = stored_meta(name, "k");
    PS_ASSERT(json_object_get(meta, "ActiveSession") == NULL);
    PS_ASSERT_EQ(json_integer_value(json_object_get(meta, "SessionLoadCount")), 2);
    json_decref(meta);
}

/* Three concurrent loads of one key in one service: nil, nil, profile (§4.2). */
static void test_concurrent_loads_of_one_key(void)
{
    ps_service *s = test_service(g_url, 1, "job-yoink", NULL);
    ps_profile_store *store = test_store(s, test_store_name("Yoink"));
    load_result r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = (load_result){0, 0, NULL, pthread_self()};
        PS_ASSERT_OK(ps_store_load_profile_async(store, "k", NULL, on_loaded, &r[i]));
    }
    test_tick_until(s, &r[2].done, 0, 5000);
    PS_ASSERT(r[0].done && r[1].done && r[2].done);
    PS_ASSERT_EQ(r[0].status, PS_ECANCELLED);
    PS_ASSERT_EQ(r[1].status, PS_ECANCELLED);
    PS_ASSERT_OK(r[2].status);
    PS_ASSERT(r[2].profile && ps_profile_is_active(r[2].profile));
    ps_profile_free(r[2].profile);
    ps_service_free(s);
}

/* ---- view --------------------------------------------------------------------------- */

static void test_view_never_writes(void)
{
    ps_service *s = test_service(g_url, 1, "job-view", NULL);
    const char *name = test_store_name("View");
    ps_profile_store *store = test_store(s, name);
    ps_profile *v = NULL;
    PS_ASSERT_OK(ps_store_view_profile(&v, store, "never"));
    PS_ASSERT(ps_profile_data(v) == NULL);
    PS_ASSERT(ps_profile_meta_data(v) == NULL);
    PS_ASSERT(!ps_profile_is_active(v));
    PS_ASSERT_STATUS(ps_profile_save(v), PS_EVIEW);
    PS_ASSERT_STATUS(ps_profile_release(v), PS_EVIEW);
    PS_ASSERT_STATUS(ps_profile_set_meta_tag_new(v, "t", json_true()), PS_EVIEW);
    ps_profile_free(v);
    PS_ASSERT(raw_get(name, "never") == NULL); /* still never created */

    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(3));
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(p, "Tag", json_string("x")));
    PS_ASSERT_OK(ps_profile_release(p));
    PS_ASSERT_OK(ps_store_view_profile(&v, store, "k"));
    char *before = raw_get(name, "k");
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(v), "Coins")), 3);
    PS_ASSERT_STR_EQ(json_string_value(ps_profile_get_meta_tag(v, "Tag")), "x");
    PS_ASSERT(!ps_profile_active_session(v, NULL, NULL));
    ps_profile_free(v);
    PS_ASSERT_OK(ps_store_view_profile(&v, store, "k"));
    char *after = raw_get(name, "k");
    PS_ASSERT_STR_EQ(before, after);
    free(before);
    free(after);
    ps_profile_free(v);
    ps_profile_free(p);
    ps_service_free(s);
}

/* ---- corruption ----------------------------------------------------------------------- */

typedef struct quarantine_find {
    const char *key;
    const char *want;
    int found;
} quarantine_find;

static int find_quarantined(const ps_quarantine_entry *e, void *ud)
{
    quarantine_find *q = ud;
    if (strcmp(e->key, q->key) == 0 && e->doc.len == strlen(q->want) &&
        memcmp(e->doc.data, q->want, e->doc.len) == 0)
        q->found = 1;
    return 0;
}

static void check_corrupt_load(const char *name, const char *key, const char *bytes,
                               int data_is_template)
{
    test_recorder rec;
    raw_put(name, key, bytes);
    ps_service *s = test_service(g_url, 1, "job-corrupt", &rec);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, test_store(s, name), key, NULL, NULL));
    PS_ASSERT_EQ(rec.corruptions, 1);
    PS_ASSERT_STR_EQ(rec.last_corrupt_key, key);
    json_t *tmpl = test_template();
    if (data_is_template)
        PS_ASSERT(json_equal(ps_profile_data(p), tmpl));
    json_decref(tmpl);
    json_t *doc = test_stored_doc(g_url, name, key);
    PS_ASSERT(json_is_true(json_object_get(doc, "WasCorrupted")));
    json_decref(doc);
    /* The original bytes are kept aside for an operator. */
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    PS_ASSERT(b->quarantine_list != NULL);
    quarantine_find q = {key, bytes, 0};
    PS_ASSERT_OK(b->quarantine_list(b, name, key, find_quarantined, &q));
    PS_ASSERT(q.found);
    ps_backend_free(b);
    ps_profile_release(p);
    ps_profile_free(p);
    ps_service_free(s);
}

static void test_corrupt_documents(void)
{
    const char *name = test_store_name("Corrupt");
    check_corrupt_load(name, "not-json", "{\"Data\": oops", 1);
    check_corrupt_load(name, "string", "\"ThisAintRight\"", 1);
    check_corrupt_load(name, "array", "[\"ThisAintRight\"]", 1);
    check_corrupt_load(name, "data-number",
                       "{\"Data\":5,\"MetaData\":{\"ProfileCreateTime\":1,"
                       "\"SessionLoadCount\":1,\"MetaTags\":{}},\"GlobalUpdates\":[0,[]]}",
                       1);
    check_corrupt_load(name, "meta-types",
                       "{\"Data\":{\"Coins\":9},\"MetaData\":{\"ProfileCreateTime\":\"x\","
                       "\"SessionLoadCount\":\"y\",\"ActiveSession\":7,\"MetaTags\":3},"
                       "\"GlobalUpdates\":[0,[]]}",
                       0);
}

/* ---- many asynchronous loads ---------------------------------------------------------- */

static void test_hundred_async_loads(void)
{
    test_recorder rec;
    ps_service *s = test_service(g_url, 1, "job-async", &rec);
    ps_profile_store *store = test_store(s, test_store_name("Async"));
    enum { N = 100 };
    static load_result r[N];
    char key[32];
    for (int i = 0; i < N; i++) {
        r[i] = (load_result){0, 0, NULL, pthread_self()};
        snprintf(key, sizeof key, "player-%d", i);
        PS_ASSERT_OK(ps_store_load_profile_async(store, key, NULL, on_loaded, &r[i]));
    }
    int done = 0, ticks = 0;
    while (done < N && ticks < 200000) {
        PS_ASSERT_OK(ps_service_update(s)); /* the tick never blocks on I/O */
        ticks++;
        done = 0;
        for (int i = 0; i < N; i++)
            done += r[i].done;
        usleep(100);
    }
    PS_ASSERT_EQ(done, N);
    for (int i = 0; i < N; i++) {
        PS_ASSERT_OK(r[i].status);
        PS_ASSERT(ps_profile_is_active(r[i].profile));
        PS_ASSERT_OK(ps_profile_release(r[i].profile));
        ps_profile_free(r[i].profile);
    }
    PS_ASSERT(ticks > 1); /* loads completed across ticks, not inside one */
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 0);
}

/* ---- shutdown ---------------------------------------------------------------------------- */

static void test_shutdown_releases_everything(void)
{
    const char *name = test_store_name("Shutdown");
    ps_service *s = test_service(g_url, 1, "job-shut", NULL);
    ps_profile_store *store = test_store(s, name);
    ps_profile *p[3];
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
        json_object_set_new(ps_profile_data(p[i]), "Coins", json_integer(i + 1));
    }
    PS_ASSERT(!ps_service_locked(s));
    PS_ASSERT_OK(ps_service_shutdown(s));
    PS_ASSERT(ps_service_locked(s));
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        PS_ASSERT(!ps_profile_is_active(p[i]));
        json_t *doc = test_stored_doc(g_url, name, key);
        PS_ASSERT(json_object_get(json_object_get(doc, "MetaData"), "ActiveSession") == NULL);
        PS_ASSERT_EQ(json_integer_value(json_object_get(json_object_get(doc, "Data"), "Coins")),
                     i + 1);
        json_decref(doc);
        ps_profile_free(p[i]);
    }
    ps_profile *q = NULL;
    PS_ASSERT_STATUS(ps_store_load_profile(&q, store, "k0", NULL, NULL), PS_ESHUTDOWN);
    PS_ASSERT_STATUS(ps_store_view_profile(&q, store, "k0"), PS_ESHUTDOWN);
    PS_ASSERT_OK(ps_service_shutdown(s)); /* twice is harmless */
    ps_service_free(s);
}

/* ---- bad arguments ----------------------------------------------------------------------- */

static void test_bad_args(void)
{
    const char *name = test_store_name("BadArgs");
    ps_service *s = test_service(g_url, 1, "job-bad", NULL);
    ps_profile_store *store = test_store(s, name), *other = NULL;
    ps_profile *p = NULL;
    char long_key[60];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    PS_ASSERT_STATUS(ps_store_load_profile(&p, store, "", NULL, NULL), PS_EINVAL);
    PS_ASSERT(strstr(ps_error_last()->message, "empty") != NULL);
    PS_ASSERT_STATUS(ps_store_load_profile(&p, store, NULL, NULL, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_load_profile(&p, store, long_key, NULL, NULL), PS_EINVAL);
    PS_ASSERT(strstr(ps_error_last()->message, "50") != NULL);
    PS_ASSERT_STATUS(ps_store_load_profile(&p, store, "bad\xff", NULL, NULL), PS_EINVAL);
    PS_ASSERT(strstr(ps_error_last()->message, "UTF-8") != NULL);
    PS_ASSERT_STATUS(ps_store_load_profile(&p, NULL, "k", NULL, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_load_profile(NULL, store, "k", NULL, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_view_profile(&p, store, ""), PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_load_profile_async(store, "k", NULL, NULL, NULL), PS_EINVAL);
    json_t *not_object = json_array();
    PS_ASSERT_STATUS(ps_service_get_profile_store(&other, s, "X", not_object), PS_EINVAL);
    PS_ASSERT_STATUS(ps_service_get_profile_store(&other, s, "", not_object), PS_EINVAL);
    PS_ASSERT_STATUS(ps_service_get_profile_store(&other, s, long_key, not_object), PS_EINVAL);
    json_decref(not_object);
    json_t *different = json_pack("{s:i}", "Other", 1);
    PS_ASSERT_STATUS(ps_service_get_profile_store(&other, s, name, different), PS_EINVAL);
    json_decref(different);
    PS_ASSERT(p == NULL);
    /* Nothing was stored by any of it. */
    PS_ASSERT(raw_get(name, "k") == NULL);
    ps_config bad;
    ps_config_init(&bad);
    bad.auto_save_period = -1;
    ps_service *t = NULL;
    PS_ASSERT_STATUS(ps_service_new(&t, &bad), PS_EINVAL);
    ps_config_init(&bad);
    bad.store_url = "nosuch:thing";
    PS_ASSERT_STATUS(ps_service_new(&t, &bad), PS_EINVAL);
    PS_ASSERT(t == NULL);
    ps_service_free(s);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    PS_RUN(test_new_profile_gets_template);
    PS_RUN(test_load_count_and_create_time);
    PS_RUN(test_already_loaded_is_an_error);
    PS_RUN(test_handler_cancel_and_repeat);
    PS_RUN(test_force_load_live_owner);
    PS_RUN(test_force_load_steals_from_stuck_owner);
    PS_RUN(test_dead_lock_expires);
    PS_RUN(test_concurrent_loads_of_one_key);
    PS_RUN(test_view_never_writes);
    PS_RUN(test_corrupt_documents);
    PS_RUN(test_hundred_async_loads);
    PS_RUN(test_shutdown_releases_everything);
    PS_RUN(test_bad_args);
    printf("ok\n");
    return 0;
}
