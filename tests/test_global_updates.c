/* test_global_updates.c — GlobalUpdates (SEMANTICS.md §7): the gift lifecycle (add to
 * a never-created key, load, lock, locked listener, apply, clear), changes and clears
 * from another server while the owner is online, handler errors that write nothing,
 * views, concurrent adds and stacked changes from two servers, and where listeners
 * run. Run as `test_global_updates URL`; every server is a service with its own
 * session tag on the same store. */
#include "support.h"

/* Listeners, handlers and done callbacks must run on the host thread, inside a
 * ps_service_update or a blocking call made by the test: g_in_call counts those. */
static pthread_t g_host;
static int g_in_call;

static void check_host_call(void)
{
    if (!pthread_equal(pthread_self(), g_host))
        PS_FAIL("a callback ran off the host thread");
    if (g_in_call <= 0)
        PS_FAIL("a callback ran outside ps_service_update and every blocking call");
}

static void tick(ps_service *s)
{
    g_in_call++;
    PS_ASSERT_OK(ps_service_update(s));
    g_in_call--;
}

/* Ticks without moving the virtual clock, so no auto-save comes due. */
static void ticks(ps_service *s, int n)
{
    for (int i = 0; i < n; i++) {
        tick(s);
        usleep(300);
    }
}

/* ---- the store under test ------------------------------------------------------- */

/* Two servers and the test's own reads must see one store. */
static void check_store_is_shared(void)
{
    if (!test_url_shares_store(g_url))
        PS_FAIL("\"%s\" gives each backend handle a private store; this suite needs "
                "one store seen by several services (memory:NAME, sqlite:PATH, "
                "postgres://...)",
                g_url);
}

static ps_service *gu_service(int64_t place, const char *job, test_recorder *rec)
{
    ps_config config;
    test_config(&config, g_url, place, job);
    config.load_repeat_delay = 1;
    return test_service_from(&config, rec);
}

static char *stored_raw(const char *store, const char *key)
{
    return test_raw_get(g_url, store, key);
}

static json_t *stored_doc(const char *store, const char *key)
{
    char *raw = stored_raw(store, key);
    json_t *doc = raw ? json_loads(raw, 0, NULL) : NULL;
    PS_ASSERT(!raw || doc);
    free(raw);
    return doc;
}

/* Stored GlobalUpdates as compact text, e.g. [1,[[1,1,false,{"Coins":5}]]]. */
static char *stored_gu_text(const char *store, const char *key)
{
    json_t *doc = stored_doc(store, key);
    json_t *gu = json_object_get(doc, "GlobalUpdates");
    char *text = gu ? json_dumps(gu, JSON_COMPACT | JSON_SORT_KEYS) : strdup("(none)");
    json_decref(doc);
    return text;
}

#define ASSERT_STORED_GU(store, key, want)                                               \
    do {                                                                                 \
        char *got_ = stored_gu_text(store, key);                                         \
        PS_ASSERT_STR_EQ(got_, want);                                                    \
        free(got_);                                                                      \
    } while (0)

static json_int_t stored_coins(const char *store, const char *key)
{
    json_t *doc = stored_doc(store, key);
    json_int_t coins =
        json_integer_value(json_object_get(json_object_get(doc, "Data"), "Coins"));
    json_decref(doc);
    return coins;
}

/* [[id, data], …] from get_active_updates / get_locked_updates, as compact text. */
static char *updates_text(ps_global_updates *gu, int locked)
{
    json_t *list = NULL;
    PS_ASSERT_OK(locked ? ps_global_updates_get_locked_updates(&list, gu)
                        : ps_global_updates_get_active_updates(&list, gu));
    char *text = json_dumps(list, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(list);
    return text;
}

#define ASSERT_UPDATES(gu, locked, want)                                                 \
    do {                                                                                 \
        char *got_ = updates_text(gu, locked);                                           \
        PS_ASSERT_STR_EQ(got_, want);                                                    \
        free(got_);                                                                      \
    } while (0)

/* Saves and ticks until that save is done: MetaTagsLatest shows its sequence tag. */
static void save_and_wait(ps_service *s, ps_profile *p)
{
    static int seq;
    seq++;
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(p, "SaveSeq", json_integer(seq)));
    PS_ASSERT_OK(ps_profile_save(p));
    for (int i = 0; i < 20000; i++) {
        json_t *v = json_object_get(ps_profile_meta_tags_latest(p), "SaveSeq");
        if (json_integer_value(v) == seq)
            return;
        tick(s);
        usleep(200);
    }
    PS_FAIL("save %d of \"%s\" did not complete", seq, ps_profile_key(p));
}

static ps_profile *load(ps_profile_store *store, const char *key)
{
    ps_profile *p = NULL;
    g_in_call++;
    int rc = ps_store_load_profile(&p, store, key, NULL, NULL);
    g_in_call--;
    PS_ASSERT_STATUS(rc, PS_OK);
    return p;
}

/* ---- scripted update handlers --------------------------------------------------- */

/* One handler step: 'a' add, 'c' change, 'x' clear active, 'l' lock active,
 * 'k' clear locked (the last two must fail inside a handler). @c json is parsed with
 * JSON_DECODE_ANY; NULL passes a NULL value. */
typedef struct gu_step {
    char op;
    int64_t id;
    const char *json;
} gu_step;

typedef struct gu_script {
    const gu_step *steps;
    int count;
    int runs;
    int rc[8];
    int64_t ids[8];
} gu_script;

static void script_handler(ps_global_updates *gu, void *ud)
{
    gu_script *sc = ud;
    check_host_call();
    sc->runs++;
    for (int i = 0; i < sc->count; i++) {
        const gu_step *st = &sc->steps[i];
        json_t *data = st->json ? json_loads(st->json, JSON_DECODE_ANY, NULL) : NULL;
        PS_ASSERT(!st->json || data);
        switch (st->op) {
        case 'a':
            sc->rc[i] = ps_global_updates_add_active_update(gu, data, &sc->ids[i]);
            break;
        case 'c':
            sc->rc[i] = ps_global_updates_change_active_update(gu, st->id, data);
            break;
        case 'x':
            sc->rc[i] = ps_global_updates_clear_active_update(gu, st->id);
            break;
        case 'l':
            sc->rc[i] = ps_global_updates_lock_active_update(gu, st->id);
            break;
        case 'k':
            sc->rc[i] = ps_global_updates_clear_locked_update(gu, st->id);
            break;
        default:
            PS_FAIL("bad step %c", st->op);
        }
        json_decref(data);
    }
}

/* Runs one blocking GlobalUpdateProfileAsync with @p steps; returns its status. */
static int run_script(ps_global_updates **out, gu_script *sc, ps_profile_store *store,
                      const char *key, const gu_step *steps, int count)
{
    memset(sc, 0, sizeof *sc);
    sc->steps = steps;
    sc->count = count;
    g_in_call++;
    int rc = ps_store_global_update_profile(out, store, key, script_handler, sc);
    g_in_call--;
    return rc;
}

/* ---- listener recorder ---------------------------------------------------------- */

typedef struct gu_log {
    int count;
    int64_t ids[64];
    json_t *data[64]; /* copies */
    ps_profile *profile;
    ps_service *service;
    ps_profile_store *store;
    int lock;   /* active listener: lock what arrives */
    int apply;  /* locked listener: Coins += data.Coins, then clear */
    int probed; /* the re-entrancy checks ran */
} gu_log;

static void log_add(gu_log *g, int64_t id, const json_t *data)
{
    PS_ASSERT(g->count < 64);
    g->ids[g->count] = id;
    g->data[g->count] = json_deep_copy(data);
    g->count++;
}

static void log_dispose(gu_log *g)
{
    for (int i = 0; i < g->count; i++)
        json_decref(g->data[i]);
    memset(g, 0, sizeof *g);
}

static void noop_handler(ps_global_updates *gu, void *ud)
{
    (void)gu;
    (void)ud;
    PS_FAIL("a handler of a refused call ran");
}

/* Blocking calls and the tick refuse to run inside a listener. */
static void probe_reentrancy(gu_log *g)
{
    if (g->probed++ || !g->store)
        return;
    ps_global_updates *r = NULL;
    PS_ASSERT_STATUS(
        ps_store_global_update_profile(&r, g->store, "other", noop_handler, NULL),
        PS_EINVAL);
    PS_ASSERT(r == NULL);
    PS_ASSERT_STATUS(ps_service_update(g->service), PS_EINVAL);
}

static void on_active(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    gu_log *g = ud;
    check_host_call();
    PS_ASSERT(gu == ps_profile_global_updates(g->profile));
    log_add(g, id, data);
    probe_reentrancy(g);
    if (g->lock)
        PS_ASSERT_OK(ps_global_updates_lock_active_update(gu, id));
}

static void on_locked(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    gu_log *g = ud;
    check_host_call();
    PS_ASSERT(gu == ps_profile_global_updates(g->profile));
    log_add(g, id, data);
    probe_reentrancy(g);
    if (!g->apply)
        return;
    json_t *d = ps_profile_data(g->profile);
    json_int_t coins = json_integer_value(json_object_get(d, "Coins"));
    json_int_t gift = json_integer_value(json_object_get(data, "Coins"));
    json_object_set_new(d, "Coins", json_integer(coins + gift));
    PS_ASSERT_OK(ps_global_updates_clear_locked_update(gu, id));
    PS_ASSERT_STATUS(ps_global_updates_clear_locked_update(gu, id), PS_EINVAL);
}

static void listen_both(gu_log *active, gu_log *locked, ps_profile *p)
{
    ps_global_updates *gu = ps_profile_global_updates(p);
    PS_ASSERT_OK(
        ps_global_updates_listen_to_new_active_update(NULL, gu, on_active, active, NULL));
    PS_ASSERT_OK(
        ps_global_updates_listen_to_new_locked_update(NULL, gu, on_locked, locked, NULL));
}

/* ---- the full lifecycle ----------------------------------------------------------- */

static void test_full_lifecycle(void)
{
    test_recorder rec;
    ps_service *s = gu_service(1000, "job-life", &rec);
    const char *name = test_store_name("GiftLifecycle");
    ps_profile_store *store = test_store(s, name);

    /* A gift to a key that was never created: the document holds only GlobalUpdates. */
    gu_script sc;
    const gu_step gift[] = {{'a', 0, "{\"Coins\":5}"}};
    ps_global_updates *result = NULL;
    PS_ASSERT_OK(run_script(&result, &sc, store, "Player_1", gift, 1));
    PS_ASSERT_EQ(sc.runs, 1);
    PS_ASSERT_OK(sc.rc[0]);
    PS_ASSERT_EQ(sc.ids[0], 1);
    ASSERT_UPDATES(result, 0, "[[1,{\"Coins\":5}]]");
    ASSERT_UPDATES(result, 1, "[]");
    /* The result is read-only. */
    int rc = ps_global_updates_lock_active_update(result, 1);
    PS_ASSERT(rc == PS_EINVAL || rc == PS_EVIEW);
    ps_global_updates_free(result);
    char *raw = stored_raw(name, "Player_1");
    /* ProfileService's gift-only layout, plus the ids of recent gift writes that make
     * a retried write idempotent (a field ProfileService keeps as it is). */
    json_t *ids = NULL, *updates = NULL;
    const char *origin = NULL;
    json_int_t seq = 0;
    json_t *stored = json_loads(raw, 0, NULL);
    PS_ASSERT_OK(json_unpack(stored, "{s:o, s:o !}", "GlobalUpdateRequestIds", &ids,
                             "GlobalUpdates", &updates));
    PS_ASSERT_OK(json_unpack(ids, "[[sI]]", &origin, &seq));
    /* The request id names this service instance: its job id and a random suffix. */
    PS_ASSERT_EQ(strncmp(origin, "job-life/", 9), 0);
    PS_ASSERT_EQ(strlen(origin), 9 + 16);
    PS_ASSERT_EQ(seq, 1);
    char *updates_raw = json_dumps(updates, JSON_COMPACT);
    PS_ASSERT_STR_EQ(updates_raw, "[1,[[1,1,false,{\"Coins\":5}]]]");
    free(updates_raw);
    json_decref(stored);
    free(raw);

    /* Load: the update is there, Active; no listener fires at load, nor at a save that
     * finds nothing new. */
    ps_profile *p = load(store, "Player_1");
    ps_global_updates *gu = ps_profile_global_updates(p);
    PS_ASSERT(gu != NULL);
    ASSERT_UPDATES(gu, 0, "[[1,{\"Coins\":5}]]");
    ASSERT_UPDATES(gu, 1, "[]");
    gu_log act = {0}, lck = {0};
    act.profile = lck.profile = p;
    act.service = lck.service = s;
    lck.store = store;
    lck.apply = 1;
    listen_both(&act, &lck, p);
    json_t *doc = stored_doc(name, "Player_1");
    PS_ASSERT(json_is_object(json_object_get(doc, "Data")));
    PS_ASSERT(json_is_object(json_object_get(doc, "MetaData")));
    json_decref(doc);
    ASSERT_STORED_GU(name, "Player_1", "[1,[[1,1,false,{\"Coins\":5}]]]");
    save_and_wait(s, p);
    PS_ASSERT_EQ(act.count, 0);
    PS_ASSERT_EQ(lck.count, 0);

    /* Lock: pending until the next save; the locked listener waits for that save. */
    PS_ASSERT_OK(ps_global_updates_lock_active_update(gu, 1));
    PS_ASSERT_STATUS(ps_global_updates_lock_active_update(gu, 1), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_clear_locked_update(gu, 1), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_lock_active_update(gu, 99), PS_ENOTFOUND);
    PS_ASSERT_STATUS(ps_global_updates_clear_locked_update(gu, 99), PS_ENOTFOUND);
    ASSERT_UPDATES(gu, 0, "[]");
    ASSERT_UPDATES(gu, 1, "[]");
    ticks(s, 50);
    PS_ASSERT_EQ(lck.count, 0);
    ASSERT_STORED_GU(name, "Player_1", "[1,[[1,1,false,{\"Coins\":5}]]]");

    /* The locking save: the listener fires once, after it, and applies + clears. */
    save_and_wait(s, p);
    PS_ASSERT_EQ(lck.count, 1);
    PS_ASSERT_EQ(lck.ids[0], 1);
    PS_ASSERT_EQ(json_integer_value(json_object_get(lck.data[0], "Coins")), 5);
    PS_ASSERT_EQ(lck.probed, 1);
    PS_ASSERT_EQ(act.count, 0);
    ASSERT_STORED_GU(name, "Player_1", "[1,[[1,1,true,{\"Coins\":5}]]]");
    PS_ASSERT_EQ(stored_coins(name, "Player_1"), 0); /* neither the gift nor the clear */
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(p), "Coins")), 5);
    ASSERT_UPDATES(gu, 0, "[]");
    ASSERT_UPDATES(gu, 1, "[]"); /* pending clear */

    /* The clearing save carries the Data change in the same document. */
    save_and_wait(s, p);
    ASSERT_STORED_GU(name, "Player_1", "[1,[]]");
    PS_ASSERT_EQ(stored_coins(name, "Player_1"), 5);
    PS_ASSERT_EQ(lck.count, 1);
    PS_ASSERT_STATUS(ps_global_updates_clear_locked_update(gu, 1), PS_ENOTFOUND);
    save_and_wait(s, p);
    PS_ASSERT_EQ(lck.count, 1);
    PS_ASSERT_EQ(act.count, 0);

    /* The index is never decremented: the next gift gets id 2, and arrives while
     * online through the new-active listener. */
    const gu_step gift2[] = {{'a', 0, "{\"Coins\":7}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store, "Player_1", gift2, 1));
    PS_ASSERT_EQ(sc.ids[0], 2);
    ASSERT_STORED_GU(name, "Player_1", "[2,[[2,1,false,{\"Coins\":7}]]]");
    ticks(s, 20);
    PS_ASSERT_EQ(act.count, 0);
    act.lock = 1;
    save_and_wait(s, p);
    PS_ASSERT_EQ(act.count, 1);
    PS_ASSERT_EQ(act.ids[0], 2);
    save_and_wait(s, p); /* writes the lock; the locked listener applies */
    PS_ASSERT_EQ(lck.count, 2);
    PS_ASSERT_EQ(lck.ids[1], 2);
    save_and_wait(s, p);
    ASSERT_STORED_GU(name, "Player_1", "[2,[]]");
    PS_ASSERT_EQ(stored_coins(name, "Player_1"), 12);
    PS_ASSERT_EQ(act.count, 1);

    /* After release: the owner's methods refuse; reading still works. */
    PS_ASSERT_OK(ps_profile_release(p));
    PS_ASSERT_STATUS(ps_global_updates_lock_active_update(gu, 2), PS_ERELEASED);
    PS_ASSERT_STATUS(ps_global_updates_clear_locked_update(gu, 2), PS_ERELEASED);
    PS_ASSERT_STATUS(
        ps_global_updates_listen_to_new_active_update(NULL, gu, on_active, &act, NULL),
        PS_ERELEASED);
    PS_ASSERT_STATUS(
        ps_global_updates_listen_to_new_locked_update(NULL, gu, on_locked, &lck, NULL),
        PS_ERELEASED);
    ASSERT_UPDATES(gu, 0, "[]");
    g_in_call++;
    PS_ASSERT_OK(ps_service_shutdown(s));
    g_in_call--;
    ASSERT_STORED_GU(name, "Player_1", "[2,[]]");
    PS_ASSERT_EQ(stored_coins(name, "Player_1"), 12);
    ps_profile_free(p);
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 0);
    PS_ASSERT_EQ(rec.corruptions, 0);
    log_dispose(&act);
    log_dispose(&lck);
}

/* ---- another server changes and clears while the owner is online ------------------ */

/* (id, data.v) pairs the owner's new-active listener saw must never repeat. */
static void assert_unique_deliveries(const gu_log *g)
{
    for (int i = 0; i < g->count; i++)
        for (int j = i + 1; j < g->count; j++)
            if (g->ids[i] == g->ids[j] && json_equal(json_object_get(g->data[i], "v"),
                                                     json_object_get(g->data[j], "v")))
                PS_FAIL("update %lld delivered twice at the same version",
                        (long long)g->ids[i]);
}

static json_int_t logged_v(const gu_log *g, int i)
{
    return json_integer_value(json_object_get(g->data[i], "v"));
}

static void test_online_change_and_clear(void)
{
    test_recorder rec_a, rec_b;
    ps_service *a = gu_service(1000, "job-owner", &rec_a);
    ps_service *b = gu_service(2000, "job-gifter", &rec_b);
    const char *name = test_store_name("GiftOnline");
    ps_profile_store *store_a = test_store(a, name), *store_b = test_store(b, name);
    ps_profile *p = load(store_a, "k");
    gu_log act = {0}, lck = {0};
    act.profile = lck.profile = p;
    act.service = lck.service = a;
    listen_both(&act, &lck, p);
    ps_global_updates *gu = ps_profile_global_updates(p);
    gu_script sc;

    /* B adds two; A hears of them only after its next save, once each. */
    const gu_step add2[] = {{'a', 0, "{\"v\":1}"}, {'a', 0, "{\"v\":1}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store_b, "k", add2, 2));
    PS_ASSERT_EQ(sc.ids[0], 1);
    PS_ASSERT_EQ(sc.ids[1], 2);
    ticks(a, 30);
    PS_ASSERT_EQ(act.count, 0);
    ASSERT_UPDATES(gu, 0, "[]");
    save_and_wait(a, p);
    PS_ASSERT_EQ(act.count, 2);
    PS_ASSERT_EQ(act.ids[0], 1);
    PS_ASSERT_EQ(act.ids[1], 2);
    ASSERT_UPDATES(gu, 0, "[[1,{\"v\":1}],[2,{\"v\":1}]]");
    save_and_wait(a, p);
    PS_ASSERT_EQ(act.count, 2);

    /* A change bumps the version: one more delivery, with the new data. */
    const gu_step change1[] = {{'c', 1, "{\"v\":2}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store_b, "k", change1, 1));
    ASSERT_STORED_GU(name, "k", "[2,[[1,2,false,{\"v\":2}],[2,1,false,{\"v\":1}]]]");
    ticks(a, 30);
    PS_ASSERT_EQ(act.count, 2);
    save_and_wait(a, p);
    PS_ASSERT_EQ(act.count, 3);
    PS_ASSERT_EQ(act.ids[2], 1);
    PS_ASSERT_EQ(logged_v(&act, 2), 2);
    save_and_wait(a, p);
    PS_ASSERT_EQ(act.count, 3);

    /* Two changes in one call: version + 2, one delivery of the last data. */
    const gu_step change2[] = {{'c', 1, "{\"v\":3}"}, {'c', 1, "{\"v\":4}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store_b, "k", change2, 2));
    ASSERT_STORED_GU(name, "k", "[2,[[1,4,false,{\"v\":4}],[2,1,false,{\"v\":1}]]]");
    save_and_wait(a, p);
    PS_ASSERT_EQ(act.count, 4);
    PS_ASSERT_EQ(act.ids[3], 1);
    PS_ASSERT_EQ(logged_v(&act, 3), 4);

    /* A clear: gone from A's view after A's next save, and no delivery. */
    const gu_step clear2[] = {{'x', 2, NULL}};
    PS_ASSERT_OK(run_script(NULL, &sc, store_b, "k", clear2, 1));
    ASSERT_STORED_GU(name, "k", "[2,[[1,4,false,{\"v\":4}]]]");
    ticks(a, 30);
    ASSERT_UPDATES(gu, 0, "[[1,{\"v\":4}],[2,{\"v\":1}]]");
    save_and_wait(a, p);
    ASSERT_UPDATES(gu, 0, "[[1,{\"v\":4}]]");
    PS_ASSERT_EQ(act.count, 4);

    /* The owner's own service can send to its own loaded profile too. */
    const gu_step add_own[] = {{'a', 0, "{\"v\":1}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store_a, "k", add_own, 1));
    PS_ASSERT_EQ(sc.ids[0], 3);
    save_and_wait(a, p);
    PS_ASSERT_EQ(act.count, 5);
    PS_ASSERT_EQ(act.ids[4], 3);

    /* Once the owner locks one, the other server can no longer change or clear it. */
    PS_ASSERT_OK(ps_global_updates_lock_active_update(gu, 1));
    save_and_wait(a, p);
    PS_ASSERT_EQ(lck.count, 1);
    PS_ASSERT_EQ(lck.ids[0], 1);
    char *before = stored_raw(name, "k");
    const gu_step change_locked[] = {{'c', 1, "{\"v\":9}"}};
    PS_ASSERT_STATUS(run_script(NULL, &sc, store_b, "k", change_locked, 1), PS_EINVAL);
    PS_ASSERT_EQ(sc.rc[0], PS_EINVAL);
    const gu_step clear_locked[] = {{'x', 1, NULL}};
    PS_ASSERT_STATUS(run_script(NULL, &sc, store_b, "k", clear_locked, 1), PS_EINVAL);
    char *after = stored_raw(name, "k");
    PS_ASSERT_STR_EQ(after, before);
    free(before);
    free(after);
    save_and_wait(a, p);
    assert_unique_deliveries(&act);
    assert_unique_deliveries(&lck);
    PS_ASSERT_EQ(act.count, 5);
    PS_ASSERT_EQ(lck.count, 1);

    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(a);
    ps_service_free(b);
    PS_ASSERT_EQ(rec_a.issues + rec_b.issues, 0);
    log_dispose(&act);
    log_dispose(&lck);
}

/* ---- handler errors: a clear status, nothing written ------------------------------ */

/* Key "k" with update 1 Locked (by a load, lock, save, release) and 2 Active. */
static void make_locked_and_active(ps_service *s, ps_profile_store *store,
                                   const char *name)
{
    gu_script sc;
    const gu_step add2[] = {{'a', 0, "{\"Coins\":1}"}, {'a', 0, "{\"Coins\":2}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store, "k", add2, 2));
    ps_profile *p = load(store, "k");
    PS_ASSERT_OK(ps_global_updates_lock_active_update(ps_profile_global_updates(p), 1));
    save_and_wait(s, p);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ticks(s, 30);
    ASSERT_STORED_GU(name, "k",
                     "[2,[[1,1,true,{\"Coins\":1}],[2,1,false,{\"Coins\":2}]]]");
}

/* Each script must fail with @p want and leave the stored bytes as they were. */
static void expect_refused(ps_profile_store *store, const char *name, const char *key,
                           const gu_step *steps, int count, int want)
{
    char *before = stored_raw(name, key);
    gu_script sc;
    ps_global_updates *out = (ps_global_updates *)&sc; /* must be reset to NULL */
    PS_ASSERT_STATUS(run_script(&out, &sc, store, key, steps, count), want);
    PS_ASSERT(out == NULL);
    PS_ASSERT_EQ(ps_error_last()->code, want);
    PS_ASSERT(ps_error_last()->message[0] != '\0');
    char *after = stored_raw(name, key);
    if (before || after)
        PS_ASSERT_STR_EQ(after, before);
    free(before);
    free(after);
}

static void test_handler_errors_write_nothing(void)
{
    test_recorder rec;
    ps_service *s = gu_service(1, "job-errors", &rec);
    const char *name = test_store_name("GiftErrors");
    ps_profile_store *store = test_store(s, name);
    make_locked_and_active(s, store, name);

    const gu_step change_locked[] = {{'c', 1, "{\"Coins\":9}"}};
    expect_refused(store, name, "k", change_locked, 1, PS_EINVAL);
    const gu_step clear_locked[] = {{'x', 1, NULL}};
    expect_refused(store, name, "k", clear_locked, 1, PS_EINVAL);
    const gu_step change_unknown[] = {{'c', 99, "{\"Coins\":9}"}};
    expect_refused(store, name, "k", change_unknown, 1, PS_ENOTFOUND);
    const gu_step clear_unknown[] = {{'x', 99, NULL}};
    expect_refused(store, name, "k", clear_unknown, 1, PS_ENOTFOUND);
    const gu_step add_number[] = {{'a', 0, "5"}};
    expect_refused(store, name, "k", add_number, 1, PS_EINVAL);
    const gu_step add_string[] = {{'a', 0, "\"gift\""}};
    expect_refused(store, name, "k", add_string, 1, PS_EINVAL);
    const gu_step add_null[] = {{'a', 0, NULL}};
    expect_refused(store, name, "k", add_null, 1, PS_EINVAL);
    const gu_step change_bad_data[] = {{'c', 2, "true"}};
    expect_refused(store, name, "k", change_bad_data, 1, PS_EINVAL);
    /* A failing method after good ones fails the whole call: the add is not written. */
    const gu_step good_then_bad[] = {
        {'a', 0, "{\"Coins\":3}"}, {'c', 2, "{\"Coins\":4}"}, {'x', 99, NULL}};
    expect_refused(store, name, "k", good_then_bad, 3, PS_ENOTFOUND);
    /* The same on a never-created key: it stays absent. */
    const gu_step new_then_bad[] = {{'a', 0, "{\"Coins\":3}"}, {'a', 0, "7"}};
    expect_refused(store, name, "fresh", new_then_bad, 2, PS_EINVAL);
    PS_ASSERT(stored_raw(name, "fresh") == NULL);
    ASSERT_STORED_GU(name, "k",
                     "[2,[[1,1,true,{\"Coins\":1}],[2,1,false,{\"Coins\":2}]]]");

    /* Arrays are update data too (a Lua table); a change of 2 works after all that. */
    gu_script sc;
    const gu_step ok[] = {{'a', 0, "[1,2]"}, {'c', 2, "{\"Coins\":20}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store, "k", ok, 2));
    PS_ASSERT_EQ(sc.ids[0], 3);
    ASSERT_STORED_GU(name, "k",
                     "[3,[[1,1,true,{\"Coins\":1}],[2,2,false,{\"Coins\":20}],"
                     "[3,1,false,[1,2]]]]");
    ps_service_free(s);
    PS_ASSERT_EQ(rec.issues, 0);
}

/* Lock and clear are the owner's methods: inside a handler they are refused, and a
 * refused method fails the whole call (profileservice.h, ps_global_update_handler_fn:
 * "A failing method call inside it fails the whole call with that status, and
 * nothing is written"). */
static void test_owner_methods_refused_in_handler(void)
{
    ps_service *s = gu_service(1, "job-inhandler", NULL);
    const char *name = test_store_name("GiftInHandler");
    ps_profile_store *store = test_store(s, name);
    make_locked_and_active(s, store, name);
    gu_script sc;
    const gu_step lock_then_add[] = {{'l', 2, NULL}, {'a', 0, "{\"Coins\":5}"}};
    const gu_step clear_locked[] = {{'k', 1, NULL}, {'a', 0, "{\"Coins\":5}"}};
    char *before = stored_raw(name, "k");
    int rc = run_script(NULL, &sc, store, "k", lock_then_add, 2);
    int lock_rc = sc.rc[0];
    int rc2 = run_script(NULL, &sc, store, "k", clear_locked, 2);
    int clear_rc = sc.rc[0];
    char *after = stored_raw(name, "k");
    printf("inside a handler: lock -> %s, call -> %s; clear_locked -> %s, call -> %s\n",
           ps_status_name(lock_rc), ps_status_name(rc), ps_status_name(clear_rc),
           ps_status_name(rc2));
    fflush(stdout);
    PS_ASSERT_EQ(lock_rc, PS_EINVAL);
    PS_ASSERT_EQ(clear_rc, PS_EINVAL);
    PS_ASSERT_STATUS(rc, PS_EINVAL);
    PS_ASSERT_STATUS(rc2, PS_EINVAL);
    PS_ASSERT_STR_EQ(after, before);
    free(before);
    free(after);
    ps_service_free(s);
}

/* Over max_document_size: PS_ETOOBIG, nothing stored (new key and existing key). */
static void test_too_big(void)
{
    ps_config config;
    test_config(&config, g_url, 1, "job-toobig");
    config.max_document_size = 1024;
    test_recorder rec;
    ps_service *s = test_service_from(&config, &rec);
    const char *name = test_store_name("GiftTooBig");
    ps_profile_store *store = test_store(s, name);
    char big[1400];
    snprintf(big, sizeof big, "{\"Note\":\"%01200d\"}", 0);
    const gu_step add_big[] = {{'a', 0, big}};
    expect_refused(store, name, "new", add_big, 1, PS_ETOOBIG);
    PS_ASSERT(stored_raw(name, "new") == NULL);
    gu_script sc;
    const gu_step small[] = {{'a', 0, "{\"Coins\":1}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store, "old", small, 1));
    expect_refused(store, name, "old", add_big, 1, PS_ETOOBIG);
    const gu_step change_big[] = {{'c', 1, big}};
    expect_refused(store, name, "old", change_big, 1, PS_ETOOBIG);
    ASSERT_STORED_GU(name, "old", "[1,[[1,1,false,{\"Coins\":1}]]]");
    ps_service_free(s);
}

/* ---- views ---------------------------------------------------------------------- */

static void test_view_shows_global_updates(void)
{
    ps_service *s = gu_service(1, "job-view", NULL);
    const char *name = test_store_name("GiftView");
    ps_profile_store *store = test_store(s, name);
    gu_script sc;
    const gu_step add2[] = {{'a', 0, "{\"Coins\":1}"}, {'a', 0, "{\"Coins\":2}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, store, "k", add2, 2));

    ps_profile *v = NULL;
    g_in_call++;
    PS_ASSERT_OK(ps_store_view_profile(&v, store, "k"));
    g_in_call--;
    PS_ASSERT(ps_profile_data(v) == NULL); /* never created: gifts only */
    PS_ASSERT(ps_profile_meta_data(v) == NULL);
    ps_global_updates *vgu = ps_profile_global_updates(v);
    PS_ASSERT(vgu != NULL);
    ASSERT_UPDATES(vgu, 0, "[[1,{\"Coins\":1}],[2,{\"Coins\":2}]]");
    ASSERT_UPDATES(vgu, 1, "[]");
    /* Read-only: no lock, clear, listen, add, change or clear-active. */
    int rc = ps_global_updates_lock_active_update(vgu, 1);
    PS_ASSERT(rc == PS_EINVAL || rc == PS_EVIEW);
    rc = ps_global_updates_clear_locked_update(vgu, 1);
    PS_ASSERT(rc == PS_EINVAL || rc == PS_EVIEW);
    rc = ps_global_updates_listen_to_new_active_update(NULL, vgu, on_active, NULL, NULL);
    PS_ASSERT(rc == PS_EINVAL || rc == PS_EVIEW);
    rc = ps_global_updates_listen_to_new_locked_update(NULL, vgu, on_locked, NULL, NULL);
    PS_ASSERT(rc == PS_EINVAL || rc == PS_EVIEW);
    json_t *d = json_object();
    PS_ASSERT_STATUS(ps_global_updates_add_active_update(vgu, d, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_change_active_update(vgu, 1, d), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_clear_active_update(vgu, 1), PS_EINVAL);
    PS_ASSERT_EQ(d->refcount, 1);
    json_decref(d);
    ps_profile_free(v);

    /* Lock one from a loaded profile; the view shows it Locked. */
    ps_profile *p = load(store, "k");
    PS_ASSERT_OK(ps_global_updates_lock_active_update(ps_profile_global_updates(p), 2));
    save_and_wait(s, p);
    g_in_call++;
    PS_ASSERT_OK(ps_store_view_profile(&v, store, "k"));
    g_in_call--;
    PS_ASSERT(ps_profile_data(v) != NULL);
    ASSERT_UPDATES(ps_profile_global_updates(v), 0, "[[1,{\"Coins\":1}]]");
    ASSERT_UPDATES(ps_profile_global_updates(v), 1, "[[2,{\"Coins\":2}]]");
    ps_profile_free(v);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(s);
}

/* ---- two servers at once --------------------------------------------------------- */

typedef struct add_call {
    const char *from;
    int n;
    int handler_runs;
    int done;
    int status;
} add_call;

static void add_tagged(ps_global_updates *gu, void *ud)
{
    add_call *c = ud;
    check_host_call();
    c->handler_runs++;
    json_t *data = json_pack("{s:s, s:i}", "from", c->from, "n", c->n);
    PS_ASSERT_OK(ps_global_updates_add_active_update_new(gu, data, NULL));
}

/* Stacking gifts: update 1 holds a count that every call increments. */
static void bump_count(ps_global_updates *gu, void *ud)
{
    add_call *c = ud;
    check_host_call();
    c->handler_runs++;
    json_t *list = NULL;
    PS_ASSERT_OK(ps_global_updates_get_active_updates(&list, gu));
    PS_ASSERT_EQ(json_array_size(list), 1);
    json_t *pair = json_array_get(list, 0);
    PS_ASSERT_EQ(json_integer_value(json_array_get(pair, 0)), 1);
    json_t *data = json_array_get(pair, 1);
    json_int_t count = json_integer_value(json_object_get(data, "count"));
    json_decref(list);
    PS_ASSERT_OK(ps_global_updates_change_active_update_new(
        gu, 1, json_pack("{s:I}", "count", count + 1)));
}

static void on_added(int status, ps_global_updates *result, void *ud)
{
    add_call *c = ud;
    check_host_call();
    PS_ASSERT(!c->done);
    c->done = 1;
    c->status = status;
    PS_ASSERT(status != PS_OK || result != NULL);
    ps_global_updates_free(result);
}

#define PER_SERVER 40

static int all_done(const add_call *calls, int n)
{
    for (int i = 0; i < n; i++)
        if (!calls[i].done)
            return 0;
    return 1;
}

static int in_flight(const add_call *calls, int upto, int parity)
{
    int n = 0;
    for (int i = parity; i < upto; i += 2)
        n += !calls[i].done;
    return n;
}

/* PER_SERVER async calls on each service, started alternately with at most three in
 * flight per service, while both services tick in turn: the two servers' reads and
 * writes of the key overlap. */
static void run_two_servers(ps_service *a, ps_profile_store *sa, ps_service *b,
                            ps_profile_store *sb, const char *key,
                            ps_global_update_handler_fn handler, add_call *calls)
{
    int started = 0, total = 2 * PER_SERVER;
    for (int i = 0; i < 200000 && !(started == total && all_done(calls, total)); i++) {
        while (started < total && in_flight(calls, started, started % 2) < 3) {
            int k = started++;
            calls[k] = (add_call){k % 2 ? "B" : "A", k / 2, 0, 0, -100};
            PS_ASSERT_OK(ps_store_global_update_profile_async(
                k % 2 ? sb : sa, key, handler, on_added, &calls[k]));
        }
        tick(i % 2 ? b : a);
        usleep(100);
    }
    PS_ASSERT_EQ(started, total);
    PS_ASSERT(all_done(calls, total));
    for (int i = 0; i < total; i++)
        PS_ASSERT_STATUS(calls[i].status, PS_OK);
}

static void test_two_servers_add_concurrently(void)
{
    test_recorder rec_a, rec_b;
    ps_service *a = gu_service(1, "job-add-A", &rec_a);
    ps_service *b = gu_service(2, "job-add-B", &rec_b);
    const char *name = test_store_name("GiftConcurrent");
    ps_profile_store *sa = test_store(a, name), *sb = test_store(b, name);
    static add_call calls[2 * PER_SERVER];
    run_two_servers(a, sa, b, sb, "k", add_tagged, calls);

    /* Every add landed once, with a distinct id; ids are 1..2N and the index is 2N. */
    json_t *doc = stored_doc(name, "k");
    json_t *gu = json_object_get(doc, "GlobalUpdates");
    json_t *list = json_array_get(gu, 1);
    PS_ASSERT_EQ(json_integer_value(json_array_get(gu, 0)), 2 * PER_SERVER);
    PS_ASSERT_EQ(json_array_size(list), 2 * PER_SERVER);
    int seen[2][PER_SERVER] = {{0}};
    char ids[2 * PER_SERVER + 1] = {0};
    int reruns = 0, switches = 0, last_from = -1;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *u = json_array_get(list, i);
        json_int_t id = json_integer_value(json_array_get(u, 0));
        PS_ASSERT(id >= 1 && id <= 2 * PER_SERVER);
        PS_ASSERT_EQ(ids[id]++, 0);
        PS_ASSERT_EQ(json_integer_value(json_array_get(u, 1)), 1);
        PS_ASSERT(json_is_false(json_array_get(u, 2)));
        json_t *data = json_array_get(u, 3);
        int from = strcmp(json_string_value(json_object_get(data, "from")), "B") == 0;
        json_int_t n = json_integer_value(json_object_get(data, "n"));
        PS_ASSERT(n >= 0 && n < PER_SERVER);
        PS_ASSERT_EQ(seen[from][n]++, 0);
        switches += last_from >= 0 && from != last_from;
        last_from = from;
    }
    for (int i = 0; i < 2 * PER_SERVER; i++)
        reruns += calls[i].handler_runs - 1;
    printf("%d adds from two servers: all landed, distinct ids; the stored order "
           "switches server %d times; %d handler re-runs\n",
           2 * PER_SERVER, switches, reruns);
    json_decref(doc);
    ps_service_free(a);
    ps_service_free(b);
    PS_ASSERT_EQ(rec_a.issues + rec_b.issues, 0);
}

/* Stacked gifts: every call changes update 1 from the count it read to count + 1. A
 * handler that read a stale version must be re-run, so no increment is lost. */
static void test_two_servers_stack_changes(void)
{
    test_recorder rec_a, rec_b;
    ps_service *a = gu_service(1, "job-stack-A", &rec_a);
    ps_service *b = gu_service(2, "job-stack-B", &rec_b);
    const char *name = test_store_name("GiftStacked");
    ps_profile_store *sa = test_store(a, name), *sb = test_store(b, name);
    gu_script sc;
    const gu_step first[] = {{'a', 0, "{\"count\":0}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, sa, "k", first, 1));
    static add_call calls[2 * PER_SERVER];
    run_two_servers(a, sa, b, sb, "k", bump_count, calls);
    int reruns = 0;
    for (int i = 0; i < 2 * PER_SERVER; i++)
        reruns += calls[i].handler_runs - 1;
    char want[64];
    snprintf(want, sizeof want, "[1,[[1,%d,false,{\"count\":%d}]]]", 2 * PER_SERVER + 1,
             2 * PER_SERVER);
    ASSERT_STORED_GU(name, "k", want);
    printf("%d stacked changes from two servers: count %d; %d handler re-runs\n",
           2 * PER_SERVER, 2 * PER_SERVER, reruns);
    PS_ASSERT(reruns > 0); /* the calls did overlap */
    ps_service_free(a);
    ps_service_free(b);
    PS_ASSERT_EQ(rec_a.issues + rec_b.issues, 0);
}

/* ---- where listeners run ----------------------------------------------------------- */

/* Listeners run inside the blocking call that completed the save: a view of the same
 * key queues behind the save, so the save's listeners fire inside the view call. */
static void test_listeners_fire_inside_blocking_calls(void)
{
    ps_service *a = gu_service(1, "job-where-A", NULL);
    ps_service *b = gu_service(2, "job-where-B", NULL);
    const char *name = test_store_name("GiftWhere");
    ps_profile_store *sa = test_store(a, name), *sb = test_store(b, name);
    ps_profile *p = load(sa, "k");
    gu_log act = {0}, lck = {0};
    act.profile = lck.profile = p;
    act.service = lck.service = a;
    act.store = sa;
    act.lock = 1;
    listen_both(&act, &lck, p);
    gu_script sc;
    const gu_step add1[] = {{'a', 0, "{\"Coins\":1}"}};
    PS_ASSERT_OK(run_script(NULL, &sc, sb, "k", add1, 1));

    /* Nothing fires while only time passes without a tick. */
    PS_ASSERT_OK(ps_profile_save(p));
    usleep(20000);
    PS_ASSERT_EQ(act.count, 0);
    ps_profile *v = NULL;
    g_in_call++;
    PS_ASSERT_OK(ps_store_view_profile(&v, sa, "k"));
    g_in_call--;
    PS_ASSERT_EQ(act.count, 1); /* fired inside the view call, on this thread */
    PS_ASSERT_EQ(act.probed, 1);
    ps_profile_free(v);

    /* Auto-save: the lock is written and the locked listener fires inside a tick. */
    for (int i = 0; i < 20000 && lck.count == 0; i++) {
        tick(a);
        test_clock_advance(&g_clock, 0.5);
        usleep(100);
    }
    PS_ASSERT_EQ(lck.count, 1);
    PS_ASSERT_EQ(lck.ids[0], 1);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(a);
    ps_service_free(b);
    log_dispose(&act);
    log_dispose(&lck);
}

/* ---- bad arguments ---------------------------------------------------------------- */

static void test_bad_args(void)
{
    test_recorder rec;
    ps_service *s = gu_service(1, "job-bad", &rec);
    const char *name = test_store_name("GiftBadArgs");
    ps_profile_store *store = test_store(s, name);
    gu_script sc = {0};
    ps_global_updates *out = (ps_global_updates *)&sc;
    PS_ASSERT_STATUS(ps_store_global_update_profile(&out, NULL, "k", script_handler, &sc),
                     PS_EINVAL);
    PS_ASSERT(out == NULL);
    ps_global_update_handler_fn h = script_handler;
    PS_ASSERT_STATUS(ps_store_global_update_profile(NULL, store, NULL, h, &sc),
                     PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_global_update_profile(NULL, store, "", script_handler, &sc),
                     PS_EINVAL);
    const char *long_key = "123456789012345678901234567890123456789012345678901";
    PS_ASSERT_STATUS(ps_store_global_update_profile(NULL, store, long_key, h, &sc),
                     PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_global_update_profile(NULL, store, "bad\xff", h, &sc),
                     PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_global_update_profile(NULL, store, "k", NULL, NULL),
                     PS_EINVAL);
    PS_ASSERT_STATUS(ps_store_global_update_profile_async(store, "k", h, NULL, &sc),
                     PS_EINVAL);
    PS_ASSERT_STATUS(
        ps_store_global_update_profile_async(store, "", script_handler, on_added, &sc),
        PS_EINVAL);
    PS_ASSERT_EQ(sc.runs, 0);
    PS_ASSERT(stored_raw(name, "k") == NULL);

    /* NULL global updates and outputs. */
    json_t *list = NULL;
    PS_ASSERT_STATUS(ps_global_updates_get_active_updates(&list, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_get_locked_updates(NULL, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_lock_active_update(NULL, 1), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_clear_locked_update(NULL, 1), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_clear_active_update(NULL, 1), PS_EINVAL);
    PS_ASSERT_STATUS(
        ps_global_updates_listen_to_new_active_update(NULL, NULL, on_active, NULL, NULL),
        PS_EINVAL);
    PS_ASSERT(ps_profile_global_updates(NULL) == NULL);
    ps_global_updates_free(NULL);

    /* Add, change and clear of active updates outside a handler: on a loaded
     * profile's own. The borrowed forms leave the caller's reference alone; the _new
     * forms take it, even when they fail. */
    ps_profile *p = load(store, "k");
    ps_global_updates *gu = ps_profile_global_updates(p);
    json_t *d = json_pack("{s:i}", "Coins", 1);
    PS_ASSERT_STATUS(ps_global_updates_add_active_update(gu, d, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_add_active_update(NULL, d, NULL), PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_change_active_update(gu, 1, d), PS_EINVAL);
    PS_ASSERT_EQ(d->refcount, 1);
    PS_ASSERT_STATUS(ps_global_updates_add_active_update_new(gu, json_incref(d), NULL),
                     PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_change_active_update_new(gu, 1, json_incref(d)),
                     PS_EINVAL);
    PS_ASSERT_STATUS(ps_global_updates_add_active_update_new(NULL, json_incref(d), NULL),
                     PS_EINVAL);
    PS_ASSERT_EQ(d->refcount, 1);
    PS_ASSERT_STATUS(ps_global_updates_clear_active_update(gu, 1), PS_EINVAL);
    PS_ASSERT_STATUS(
        ps_global_updates_listen_to_new_active_update(NULL, gu, NULL, NULL, NULL),
        PS_EINVAL);
    /* Freeing a profile's own global updates is ignored (they die with it). */
    ps_global_updates_free(gu);
    ASSERT_UPDATES(gu, 0, "[]");
    char *before = stored_raw(name, "k");

    /* A blocking call after shutdown. */
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    g_in_call++;
    PS_ASSERT_OK(ps_service_shutdown(s));
    g_in_call--;
    PS_ASSERT_STATUS(ps_store_global_update_profile(NULL, store, "k", h, &sc),
                     PS_ESHUTDOWN);
    PS_ASSERT_STATUS(
        ps_store_global_update_profile_async(store, "k", script_handler, on_added, &sc),
        PS_ESHUTDOWN);
    PS_ASSERT_EQ(sc.runs, 0);
    json_decref(d);
    ps_service_free(s);
    PS_ASSERT(before != NULL);
    free(before);
    PS_ASSERT_EQ(rec.issues, 0);
}

/* One gift through the blocking form from a service with session tag (place, job). */
static void gift_from(ps_service *s, const char *key, const char *from, int n)
{
    add_call call = {from, n, 0, 0, -100};
    ps_global_updates *result = NULL;
    g_in_call++;
    PS_ASSERT_OK(ps_store_global_update_profile(&result, test_store(s, "GuJobs"), key,
                                                add_tagged, &call));
    g_in_call--;
    PS_ASSERT_EQ(call.handler_runs, 1);
    ps_global_updates_free(result);
}

/* Hosts name their servers: a restarted server keeps its fixed job id, and two
 * services of one process may be given the same one. Each instance numbers its gift
 * writes from 1, so the stored request id must tell instances apart, or the new
 * instance's first gift passes for a retry of the old one's and is dropped. */
static void test_same_job_id_loses_no_gift(void)
{
    ps_service *old = gu_service(1, "job-fixed", NULL);
    gift_from(old, "Player_1", "old", 1);
    PS_ASSERT_OK(ps_service_shutdown(old));
    ps_service_free(old);

    /* The restart, and a second service with the same job id beside it. */
    ps_service *restarted = gu_service(1, "job-fixed", NULL);
    ps_service *twin = gu_service(1, "job-fixed", NULL);
    gift_from(restarted, "Player_1", "restarted", 2);
    gift_from(twin, "Player_1", "twin", 3);
    gift_from(restarted, "Player_1", "restarted", 4);

    char *text = stored_gu_text("GuJobs", "Player_1");
    PS_ASSERT_STR_EQ(text, "[4,[[1,1,false,{\"from\":\"old\",\"n\":1}],"
                           "[2,1,false,{\"from\":\"restarted\",\"n\":2}],"
                           "[3,1,false,{\"from\":\"twin\",\"n\":3}],"
                           "[4,1,false,{\"from\":\"restarted\",\"n\":4}]]]");
    free(text);
    PS_ASSERT_OK(ps_service_shutdown(restarted));
    PS_ASSERT_OK(ps_service_shutdown(twin));
    ps_service_free(restarted);
    ps_service_free(twin);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    g_host = pthread_self();
    check_store_is_shared();
    PS_RUN(test_full_lifecycle);
    PS_RUN(test_online_change_and_clear);
    PS_RUN(test_handler_errors_write_nothing);
    PS_RUN(test_too_big);
    PS_RUN(test_view_shows_global_updates);
    PS_RUN(test_two_servers_add_concurrently);
    PS_RUN(test_two_servers_stack_changes);
    PS_RUN(test_listeners_fire_inside_blocking_calls);
    PS_RUN(test_bad_args);
    PS_RUN(test_owner_methods_refused_in_handler);
    PS_RUN(test_same_job_id_loses_no_gift);
    printf("ok\n");
    return 0;
}
