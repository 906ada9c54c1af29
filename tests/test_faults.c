/*
 * test_faults.c — every write the library makes is safe to repeat: `test_faults URL`.
 *
 * The library runs over "faulty:OPTIONS:URL" (src/backend/faulty.c), which injects
 * errors and, the hard case, lost replies: an update commits and then reports
 * PS_EBACKEND, so the library retries a write that already happened. Each test
 * drives one kind of write into that case — load, save, release, the lock and clear
 * of the global update lifecycle, a gift — and checks the store afterwards: data once,
 * no session left behind, SessionLoadCount in step, the gift applied exactly once.
 * IssueSignal must fire once per injected failure, and CriticalStateSignal must come
 * and go with a sustained error rate. Virtual clock (support.h): nothing sleeps.
 *
 * URL must be a store two handles share (memory:NAME, sqlite:PATH, postgres://...):
 * the checks read it back through a plain handle.
 */
#include "support.h"

#include "backend/backends.h"
#include "service.h"

static ps_backend *open_faulty(const char *options)
{
    char url[2048];
    snprintf(url, sizeof url, "faulty:%s:%s", options, g_url);
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, url));
    return b;
}

/* A service over its own faulty handle @p fb (the service frees it). */
static ps_service *fault_service(ps_backend *fb, const char *job, test_recorder *rec)
{
    ps_config config;
    test_config(&config, g_url, 8, job);
    config.backend = fb;
    return test_service_from(&config, rec);
}

static ps_faulty_stats stats_of(ps_backend *fb)
{
    ps_faulty_stats st;
    PS_ASSERT_OK(ps__faulty_stats(&st, fb));
    return st;
}

/* Ticks until no op is queued or running (the virtual clock stands still). */
static void drain(ps_service *s)
{
    for (int i = 0; i < 50000; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        if (s->ops_in_flight == 0)
            return;
        usleep(100);
    }
    PS_FAIL("ops still in flight after 5 s");
}

/* As drain, and moves the clock on until no retry timer waits either. */
static void settle(ps_service *s)
{
    for (int i = 0; i < 1000; i++) {
        drain(s);
        if (!s->timers && !s->load_timers)
            return;
        test_clock_advance(&g_clock, s->config.load_repeat_delay + 1);
    }
    PS_FAIL("retries never ended");
}

/* One auto-save period later, its saves done. */
static void next_period(ps_service *s)
{
    test_clock_advance(&g_clock, s->config.auto_save_period + 1);
    drain(s);
}

static json_t *meta_of(json_t *doc)
{
    return json_object_get(doc, "MetaData");
}

static long long int_at(json_t *obj, const char *field)
{
    return json_integer_value(json_object_get(obj, field));
}

static int count_string(const json_t *array, const char *s)
{
    int n = 0;
    for (size_t i = 0; i < json_array_size(array); i++)
        n += json_is_string(json_array_get(array, i)) &&
             strcmp(json_string_value(json_array_get(array, i)), s) == 0;
    return n;
}

/* IssueSignal once per failure the shim caused, and no other. */
static void assert_issue_per_fault(const test_recorder *rec, ps_backend *fb)
{
    ps_faulty_stats st = stats_of(fb);
    PS_ASSERT_EQ(rec->issues, st.errors + st.lost_replies);
}

/* ---- load --------------------------------------------------------------------- */

/* The first load commits (ActiveSession = us, SessionLoadCount 1) and its reply is
 * lost; the retry finds our own session, takes it again, and the profile's count
 * is the stored one. */
static void test_load_lost_reply(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=11,lost_reply=1,limit=1");
    ps_service *s = fault_service(fb, "job-load", &rec);
    const char *name = test_store_name("FaultLoad");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    PS_ASSERT_EQ(stats_of(fb).lost_replies, 1);
    PS_ASSERT_EQ(rec.issues, 1);
    PS_ASSERT(strstr(rec.last_issue, "injected lost reply") != NULL);

    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(int_at(meta_of(doc), "SessionLoadCount"), 2);
    PS_ASSERT_EQ(ps_profile_session_load_count(p), 2);
    json_t *as = json_object_get(meta_of(doc), "ActiveSession");
    PS_ASSERT_STR_EQ(json_string_value(json_array_get(as, 1)), "job-load");
    json_decref(doc);

    /* The session works: a save lands (the fence matches), a release frees it. */
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(5));
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    PS_ASSERT_OK(ps_service_shutdown(s));
    doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(int_at(json_object_get(doc, "Data"), "Coins"), 5);
    PS_ASSERT(json_object_get(meta_of(doc), "ActiveSession") == NULL);
    json_decref(doc);
    assert_issue_per_fault(&rec, fb);
    ps_service_free(s);

    /* Another server loads it next: the count goes on from the stored one. */
    s = test_service(g_url, 9, "job-next", NULL);
    store = test_store(s, name);
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    PS_ASSERT_EQ(ps_profile_session_load_count(p), 3);
    PS_ASSERT_EQ(int_at(ps_profile_data(p), "Coins"), 5);
    ps_profile_free(p);
    ps_service_free(s);
}

static void on_load_done(int status, ps_profile *profile, void *ud)
{
    int *result = ud;
    result[0] = 1;
    result[1] = status;
    ps_profile_free(profile);
}

/* A load whose reply was lost holds the session in the store. If the service shuts
 * down before the retry, nobody knows it: the session must still be given back. */
static void test_load_lost_reply_then_shutdown(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=12,lost_reply=1,limit=1");
    ps_service *s = fault_service(fb, "job-orphan", &rec);
    const char *name = test_store_name("FaultOrphan");
    ps_profile_store *store = test_store(s, name);
    int result[2] = {0, 0};
    PS_ASSERT_OK(ps_store_load_profile_async(store, "k", NULL, on_load_done, result));
    test_settle_until(s, &rec.issues, 5000);
    PS_ASSERT_EQ(stats_of(fb).lost_replies, 1);
    PS_ASSERT_OK(ps_service_shutdown(s));
    PS_ASSERT(result[0] && result[1] == PS_ESHUTDOWN);
    json_t *doc = test_stored_doc(g_url, name, "k");
    json_t *as = json_object_get(meta_of(doc), "ActiveSession");
    if (as)
        PS_FAIL("LIBRARY BUG: the session a lost-reply load took is still held after "
                "shutdown (ActiveSession [%lld, \"%s\"]); it stays locked until "
                "assume_dead_session_lock",
                (long long)json_integer_value(json_array_get(as, 0)),
                json_string_value(json_array_get(as, 1)));
    json_decref(doc);
    ps_service_free(s);
}

/* ---- save and release ----------------------------------------------------------- */

/* A save's reply is lost: the data is in the store once, the profile stays active,
 * and the next auto-save writes the same data again, still once. */
static void test_save_lost_reply(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=13");
    ps_service *s = fault_service(fb, "job-save", &rec);
    const char *name = test_store_name("FaultSave");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    json_t *data = ps_profile_data(p);
    json_array_append_new(json_object_get(data, "Items"), json_string("gem"));
    json_object_set_new(data, "Coins", json_integer(7));

    PS_ASSERT_OK(ps__faulty_configure(fb, "lost_reply=1,limit=1"));
    PS_ASSERT_OK(ps_profile_save(p));
    drain(s);
    PS_ASSERT_EQ(rec.issues, 1);
    PS_ASSERT(ps_profile_is_active(p));
    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(int_at(json_object_get(doc, "Data"), "Coins"), 7);
    PS_ASSERT_EQ(count_string(json_object_get(json_object_get(doc, "Data"), "Items"),
                              "gem"), 1);
    json_decref(doc);

    next_period(s); /* the auto-save writes it again: still once */
    doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT(json_equal(json_object_get(doc, "Data"), ps_profile_data(p)));
    PS_ASSERT_EQ(count_string(json_object_get(json_object_get(doc, "Data"), "Items"),
                              "gem"), 1);
    PS_ASSERT_EQ(int_at(meta_of(doc), "LastUpdate"), (long long)test_clock_now(&g_clock));
    json_decref(doc);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    settle(s);
    assert_issue_per_fault(&rec, fb);
    ps_service_free(s);
}

/* The release's reply is lost: the store is released already; the retry finds the
 * session gone, writes nothing, and ends (no error loop). */
static void test_release_lost_reply(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=14");
    ps_service *s = fault_service(fb, "job-release", &rec);
    const char *name = test_store_name("FaultRelease");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(9));
    PS_ASSERT_OK(ps__faulty_configure(fb, "lost_reply=1,limit=1"));
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    drain(s);
    PS_ASSERT_EQ(rec.issues, 1);
    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT(json_object_get(meta_of(doc), "ActiveSession") == NULL);
    PS_ASSERT_EQ(int_at(json_object_get(doc, "Data"), "Coins"), 9);
    char *before = json_dumps(doc, JSON_SORT_KEYS);
    json_decref(doc);

    unsigned long long calls = stats_of(fb).calls;
    settle(s); /* the retry: one call that writes nothing */
    PS_ASSERT_EQ(stats_of(fb).calls, calls + 1);
    for (int i = 0; i < 20; i++)
        next_period(s);
    PS_ASSERT_EQ(stats_of(fb).calls, calls + 1);
    PS_ASSERT_EQ(rec.issues, 1);
    doc = test_stored_doc(g_url, name, "k");
    char *after = json_dumps(doc, JSON_SORT_KEYS);
    PS_ASSERT_STR_EQ(after, before);
    free(before);
    free(after);
    json_decref(doc);
    PS_ASSERT_OK(ps_service_shutdown(s));
    assert_issue_per_fault(&rec, fb);
    ps_service_free(s);
}

/* A release that failed outright (nothing written) is retried later; a load of the
 * same key on the same server in between must not take the stale stored Data. */
static void test_release_error_then_reload(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=15");
    ps_service *s = fault_service(fb, "job-rejoin", &rec);
    const char *name = test_store_name("FaultRejoin");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(42));
    PS_ASSERT_OK(ps__faulty_configure(fb, "error=1,limit=1"));
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    drain(s);
    PS_ASSERT_EQ(rec.issues, 1); /* the release failed; a retry is scheduled */
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    long long coins = int_at(ps_profile_data(p), "Coins");
    if (coins != 42)
        PS_FAIL("the player left (release failed, retry pending) and rejoined the "
                "same server: the new session loaded Coins %lld, the released profile "
                "had 42 and its retried release can no longer land", coins);
    ps_profile_free(p);
    ps_service_free(s);
}

/* ---- global updates: gift, lock, clear ------------------------------------------ */

static void add_gift(ps_global_updates *gu, void *ud)
{
    int n = *(int *)ud;
    PS_ASSERT_OK(
        ps_global_updates_add_active_update_new(gu, json_pack("{s:i}", "Gift", n), NULL));
}

static void send_gift(ps_profile_store *store, const char *key, int n)
{
    ps_global_updates *result = NULL;
    PS_ASSERT_OK(ps_store_global_update_profile(&result, store, key, add_gift, &n));
    ps_global_updates_free(result);
}

static json_t *stored_updates(const char *name, const char *key)
{
    json_t *doc = test_stored_doc(g_url, name, key);
    json_t *list = json_incref(json_array_get(json_object_get(doc, "GlobalUpdates"), 1));
    json_decref(doc);
    return list;
}

/* How many stored updates carry gift number @p n. */
static int gift_count(const json_t *list, int n)
{
    int found = 0;
    for (size_t i = 0; i < json_array_size(list); i++)
        found += int_at(json_array_get(json_array_get(list, i), 3), "Gift") == n;
    return found;
}

/* A gift write commits and its reply is lost; the call retries and returns PS_OK
 * with the gift added exactly once. Then the same under errors on reads too. */
static void test_gift_lost_reply(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=16,lost_reply=1,limit=1");
    ps_service *s = fault_service(fb, "job-gift", &rec);
    const char *name = test_store_name("FaultGift");
    ps_profile_store *store = test_store(s, name);
    send_gift(store, "k", 1);
    PS_ASSERT_EQ(stats_of(fb).lost_replies, 1);
    json_t *list = stored_updates(name, "k");
    PS_ASSERT_EQ(json_array_size(list), 1);
    PS_ASSERT_EQ(gift_count(list, 1), 1);
    json_decref(list);

    PS_ASSERT_OK(ps__faulty_configure(fb, "seed=160,error=0.4,lost_reply=0.4,"
                                          "conflict=0.3,limit=0"));
    for (int n = 2; n <= 12; n++)
        send_gift(store, "k", n);
    list = stored_updates(name, "k");
    PS_ASSERT_EQ(json_array_size(list), 12);
    for (int n = 1; n <= 12; n++)
        PS_ASSERT_EQ(gift_count(list, n), 1);
    json_decref(list);
    ps_faulty_stats st = stats_of(fb);
    PS_ASSERT(st.lost_replies > 1 && st.errors > 0);
    printf("   12 gifts: %llu errors, %llu lost replies, %llu conflicts injected\n",
           st.errors, st.lost_replies, st.conflicts);
    assert_issue_per_fault(&rec, fb);
    ps_service_free(s);
}

/* The owner's side (SEMANTICS.md §7.4): lock each new Active update, apply each new
 * Locked one to Data and clear it (both reach the store in one save). */
typedef struct owner {
    ps_profile *p;
    int applied, twice;
} owner;

static void apply_gift(owner *o, ps_global_updates *gu, int64_t id, const json_t *data)
{
    json_t *d = ps_profile_data(o->p);
    json_t *gifts = json_object_get(d, "Gifts");
    if (!gifts) {
        gifts = json_array();
        json_object_set_new(d, "Gifts", gifts);
    }
    json_int_t n = json_integer_value(json_object_get(data, "Gift"));
    for (size_t i = 0; i < json_array_size(gifts); i++)
        o->twice += json_integer_value(json_array_get(gifts, i)) == n;
    json_array_append_new(gifts, json_integer(n));
    json_object_set_new(d, "Coins", json_integer(int_at(d, "Coins") + 10));
    PS_ASSERT_OK(ps_global_updates_clear_locked_update(gu, id));
    o->applied++;
}

static void on_new_active(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    (void)data, (void)ud;
    PS_ASSERT_OK(ps_global_updates_lock_active_update(gu, id));
}

static void on_new_locked(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    apply_gift(ud, gu, id, data);
}

/* Loads @p key for @p o and processes what the profile already holds. */
static void owner_load(owner *o, ps_profile_store *store, const char *key)
{
    o->p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&o->p, store, key, NULL, NULL));
    ps_global_updates *gu = ps_profile_global_updates(o->p);
    json_t *list = NULL;
    PS_ASSERT_OK(ps_global_updates_get_locked_updates(&list, gu));
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *pair = json_array_get(list, i);
        apply_gift(o, gu, json_integer_value(json_array_get(pair, 0)),
                   json_array_get(pair, 1));
    }
    json_decref(list);
    PS_ASSERT_OK(ps_global_updates_get_active_updates(&list, gu));
    for (size_t i = 0; i < json_array_size(list); i++)
        PS_ASSERT_OK(ps_global_updates_lock_active_update(
            gu, json_integer_value(json_array_get(json_array_get(list, i), 0))));
    json_decref(list);
    PS_ASSERT_OK(
        ps_global_updates_listen_to_new_active_update(NULL, gu, on_new_active, o, NULL));
    PS_ASSERT_OK(
        ps_global_updates_listen_to_new_locked_update(NULL, gu, on_new_locked, o, NULL));
}

static void owner_release(owner *o)
{
    PS_ASSERT_OK(ps_profile_release(o->p));
    ps_profile_free(o->p);
    o->p = NULL;
}

/* Step by step: the save that writes the lock loses its reply, the next one shows it
 * Locked (the owner applies and clears), the save with the clear loses its reply,
 * and the next one finds nothing left. Applied once. */
static void test_lock_and_clear_lost_replies(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=17");
    ps_service *s = fault_service(fb, "job-owner", &rec);
    ps_service *sender = test_service(g_url, 9, "job-sender", NULL);
    const char *name = test_store_name("FaultLifecycle");
    ps_profile_store *store = test_store(s, name);
    ps_profile_store *sender_store = test_store(sender, name);
    owner o = {NULL, 0, 0};
    owner_load(&o, store, "k");
    send_gift(sender_store, "k", 1);

    next_period(s); /* sees the Active gift: lock pending */
    PS_ASSERT_OK(ps__faulty_configure(fb, "lost_reply=1,limit=1"));
    next_period(s); /* writes the lock; reply lost */
    json_t *list = stored_updates(name, "k");
    PS_ASSERT(json_is_true(json_array_get(json_array_get(list, 0), 2)));
    json_decref(list);
    PS_ASSERT_EQ(o.applied, 0);
    next_period(s); /* Locked now: applied and clear pending */
    PS_ASSERT_EQ(o.applied, 1);
    PS_ASSERT_OK(ps__faulty_configure(fb, "lost_reply=1,limit=1"));
    next_period(s); /* writes Data + clear; reply lost */
    list = stored_updates(name, "k");
    PS_ASSERT_EQ(json_array_size(list), 0);
    json_decref(list);
    for (int i = 0; i < 3; i++)
        next_period(s);
    PS_ASSERT_EQ(o.applied, 1);
    PS_ASSERT_EQ(o.twice, 0);
    owner_release(&o);
    settle(s);
    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(int_at(json_object_get(doc, "Data"), "Coins"), 10);
    PS_ASSERT_EQ(json_array_size(json_object_get(json_object_get(doc, "Data"), "Gifts")),
                 1);
    json_decref(doc);
    PS_ASSERT_EQ(rec.issues, 2);
    assert_issue_per_fault(&rec, fb);
    ps_service_free(sender);
    ps_service_free(s);
}

/* Many rounds over several keys with errors, lost replies and conflicts on both the
 * owner and the gift sender: join, gifts, auto-saves, leave. At the end every gift was
 * applied exactly once, no session is left, and each failure gave one IssueSignal. */
#define SOAK_KEYS 4
#define SOAK_ROUNDS 6
#define SOAK_GIFTS 2

static void soak_round(ps_service *s, ps_profile_store *store, ps_profile_store *gifts,
                       owner *o, int *sent)
{
    char key[16];
    for (int k = 0; k < SOAK_KEYS; k++) {
        snprintf(key, sizeof key, "k%d", k);
        owner_load(&o[k], store, key);
    }
    for (int k = 0; k < SOAK_KEYS; k++) {
        snprintf(key, sizeof key, "k%d", k);
        for (int g = 0; g < SOAK_GIFTS; g++)
            send_gift(gifts, key, ++sent[k]);
    }
    for (int i = 0; i < 4; i++)
        next_period(s);
    for (int k = 0; k < SOAK_KEYS; k++)
        owner_release(&o[k]);
    settle(s);
}

static void test_soak(void)
{
    test_recorder rec, rec_gifts;
    const char *faults = "seed=%d,error=0.25,lost_reply=0.25,conflict=0.25";
    char options[128];
    snprintf(options, sizeof options, faults, 18);
    ps_backend *fb = open_faulty(options);
    snprintf(options, sizeof options, faults, 19);
    ps_backend *fb_gifts = open_faulty(options);
    ps_service *s = fault_service(fb, "job-soak-owner", &rec);
    ps_service *sender = fault_service(fb_gifts, "job-soak-sender", &rec_gifts);
    const char *name = test_store_name("FaultSoak");
    ps_profile_store *store = test_store(s, name);
    ps_profile_store *gifts = test_store(sender, name);
    owner o[SOAK_KEYS] = {{NULL, 0, 0}};
    int sent[SOAK_KEYS] = {0};
    for (int r = 0; r < SOAK_ROUNDS; r++)
        soak_round(s, store, gifts, o, sent);

    /* The last gifts may still wait in the store: one calm round to process them. */
    PS_ASSERT_OK(ps__faulty_configure(fb, "error=0,lost_reply=0,conflict=0"));
    char key[16];
    for (int k = 0; k < SOAK_KEYS; k++) {
        snprintf(key, sizeof key, "k%d", k);
        owner_load(&o[k], store, key);
    }
    for (int i = 0; i < 4; i++)
        next_period(s);
    PS_ASSERT_OK(ps_service_shutdown(s));
    for (int k = 0; k < SOAK_KEYS; k++) {
        ps_profile_free(o[k].p);
        snprintf(key, sizeof key, "k%d", k);
        json_t *doc = test_stored_doc(g_url, name, key);
        json_t *data = json_object_get(doc, "Data");
        PS_ASSERT_EQ(o[k].twice, 0);
        PS_ASSERT_EQ(int_at(data, "Coins"), 10 * sent[k]);
        PS_ASSERT_EQ(json_array_size(json_object_get(data, "Gifts")), sent[k]);
        PS_ASSERT_EQ(json_array_size(json_array_get(json_object_get(doc, "GlobalUpdates"),
                                                    1)), 0);
        PS_ASSERT(json_object_get(meta_of(doc), "ActiveSession") == NULL);
        json_decref(doc);
    }
    assert_issue_per_fault(&rec, fb);
    assert_issue_per_fault(&rec_gifts, fb_gifts);
    ps_faulty_stats a = stats_of(fb), b = stats_of(fb_gifts);
    printf("   %d rounds x %d keys: %llu calls, %llu errors, %llu lost replies, %llu "
           "conflicts injected; %d issues; every gift applied once\n", SOAK_ROUNDS,
           SOAK_KEYS, a.calls + b.calls, a.errors + b.errors,
           a.lost_replies + b.lost_replies, a.conflicts + b.conflicts,
           rec.issues + rec_gifts.issues);
    ps_service_free(sender);
    ps_service_free(s);
}

/* ---- critical state --------------------------------------------------------------- */

/* Every call failing for a minute: CriticalStateSignal(true); once the store is
 * healthy again and the issues have aged out: CriticalStateSignal(false). */
static void test_critical_state(void)
{
    test_recorder rec;
    ps_backend *fb = open_faulty("seed=20");
    ps_service *s = fault_service(fb, "job-critical", &rec);
    ps_profile_store *store = test_store(s, test_store_name("FaultCritical"));
    ps_profile *p[6];
    for (int i = 0; i < 6; i++) {
        char key[16];
        snprintf(key, sizeof key, "c%d", i);
        PS_ASSERT_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
    }
    PS_ASSERT_EQ(rec.critical_on, 0);
    PS_ASSERT_OK(ps__faulty_configure(fb, "error=1"));
    for (int t = 0; t < 60 && !rec.critical_on; t += 5) {
        test_clock_advance(&g_clock, 5);
        drain(s);
    }
    PS_ASSERT_EQ(rec.critical_on, 1);
    PS_ASSERT(ps_service_is_critical_state(s));
    PS_ASSERT_OK(ps__faulty_configure(fb, "error=0"));
    for (int t = 0; t < 400 && !rec.critical_off; t += 5) {
        test_clock_advance(&g_clock, 5);
        drain(s);
    }
    PS_ASSERT_EQ(rec.critical_off, 1);
    PS_ASSERT_EQ(rec.critical_on, 1);
    PS_ASSERT(!ps_service_is_critical_state(s));
    for (int i = 0; i < 6; i++) {
        PS_ASSERT(ps_profile_is_active(p[i])); /* failed saves never drop a session */
        PS_ASSERT_OK(ps_profile_release(p[i]));
        ps_profile_free(p[i]);
    }
    PS_ASSERT_OK(ps_service_shutdown(s));
    assert_issue_per_fault(&rec, fb);
    ps_service_free(s);
}

/* ---- the shim itself -------------------------------------------------------------- */

static int put_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    (void)current;
    return ps_bytes_set(&out->doc, ud, strlen(ud));
}

/* Same seed, same faults; lost replies commit, errors do not; the shim mirrors the
 * inner backend's members; counters add up in the process totals. */
static void test_shim_schedule(void)
{
    const char *name = test_store_name("FaultShim");
    ps_faulty_stats before;
    PS_ASSERT_OK(ps__faulty_stats(&before, NULL));
    int outcome[2][64];
    for (int run = 0; run < 2; run++) {
        ps_backend *fb = open_faulty("seed=99,error=0.3,lost_reply=0.3");
        for (int i = 0; i < 64; i++)
            outcome[run][i] = fb->update(fb, name, "shim", put_transform, "v");
        ps_backend_free(fb);
    }
    PS_ASSERT(memcmp(outcome[0], outcome[1], sizeof outcome[0]) == 0);

    ps_backend *fb = open_faulty("error=1,limit=1");
    ps_backend *inner = NULL;
    PS_ASSERT_OK(ps_backend_open(&inner, g_url));
    PS_ASSERT_EQ(fb->version, inner->version);
    PS_ASSERT((fb->list != NULL) == (inner->list != NULL));
    PS_ASSERT((fb->remove != NULL) == (inner->remove != NULL));
    PS_ASSERT((fb->server_time != NULL) == (inner->server_time != NULL));
    PS_ASSERT_STATUS(fb->update(fb, name, "err", put_transform, "x"), PS_EBACKEND);
    PS_ASSERT(strstr(ps_error_last()->message, "injected fault") != NULL);
    ps_bytes got = {NULL, 0};
    PS_ASSERT_STATUS(inner->get(&got, inner, name, "err"), PS_ENOTFOUND);
    PS_ASSERT_OK(ps__faulty_configure(fb, "error=0,lost_reply=1,limit=1"));
    PS_ASSERT_STATUS(fb->update(fb, name, "lost", put_transform, "y"), PS_EBACKEND);
    PS_ASSERT(strstr(ps_error_last()->message, "injected lost reply") != NULL);
    PS_ASSERT_OK(inner->get(&got, inner, name, "lost"));
    PS_ASSERT_STR_EQ(got.data, "y");
    ps_bytes_dispose(&got);
    PS_ASSERT_STATUS(fb->get(NULL, fb, name, "lost"), PS_EINVAL); /* forwarded */
    PS_ASSERT_STATUS(ps__faulty_configure(fb, "error=7"), PS_EINVAL);
    PS_ASSERT_STATUS(ps__faulty_configure(inner, "error=0"), PS_EINVAL);
    PS_ASSERT_STATUS(ps__faulty_stats(&before, inner), PS_EINVAL);
    ps_faulty_stats mine = stats_of(fb), all;
    PS_ASSERT_EQ(mine.errors, 1);
    PS_ASSERT_EQ(mine.lost_replies, 1);
    PS_ASSERT_OK(ps__faulty_stats(&all, NULL));
    PS_ASSERT(all.calls >= before.calls + 128 + mine.calls);
    ps_backend_free(inner);
    ps_backend_free(fb);
}

typedef struct named_test {
    const char *name;
    void (*fn)(void);
} named_test;

/* load_lost_reply_then_shutdown finds a library bug (see its message); until it is
 * fixed CTest runs it as a separate, disabled test. release_error_then_reload found
 * one that the key queue's hold on a failed release fixed. */
static const named_test tests[] = {
    {"shim_schedule", test_shim_schedule},
    {"load_lost_reply", test_load_lost_reply},
    {"save_lost_reply", test_save_lost_reply},
    {"release_lost_reply", test_release_lost_reply},
    {"gift_lost_reply", test_gift_lost_reply},
    {"lock_and_clear_lost_replies", test_lock_and_clear_lost_replies},
    {"critical_state", test_critical_state},
    {"soak", test_soak},
    {"load_lost_reply_then_shutdown", test_load_lost_reply_then_shutdown},
    {"release_error_then_reload", test_release_error_then_reload},
};

/* `test_faults URL [NAME | -NAME]...`: only the NAMEs given, else all but -NAMEs. */
static int selected(const char *name, int argc, char **argv)
{
    int only = 0;
    for (int i = 2; i < argc; i++) {
        if (argv[i][0] == '-' && strcmp(argv[i] + 1, name) == 0)
            return 0;
        if (argv[i][0] != '-') {
            only = 1;
            if (strcmp(argv[i], name) == 0)
                return 1;
        }
    }
    return !only;
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    if (!test_url_shares_store(g_url)) {
        printf("skipped: %s is not shared between handles (use memory:NAME)\n", g_url);
        return 77;
    }
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        printf("-- test_%s\n", tests[i].name);
        fflush(stdout);
        tests[i].fn();
    }
    ps_faulty_stats t;
    PS_ASSERT_OK(ps__faulty_stats(&t, NULL));
    printf("ok: faults injected: %llu errors, %llu lost replies, %llu conflicts in %llu "
           "calls; every write was safe to repeat\n", t.errors, t.lost_replies,
           t.conflicts, t.calls);
    return 0;
}
