/*
 * test_clock_skew.c — servers whose clocks differ by up to ±5 minutes neither steal a
 * live session lock nor keep a dead one forever: `test_clock_skew URL`.
 *
 * The dead-lock rule (README "Clocks"): a foreign lock is live while its LastUpdate is
 * within assume_dead_session_lock (1800 s) of the loader's now, on either side. A live
 * owner rewrites LastUpdate every auto-save period (30 s), so a skew of ±300 s leaves
 * it far inside the window; a dead owner's lock is taken once 1800 s + its skew have
 * passed. On memory:NAME and sqlite: (one machine) each service gets its own skewed
 * virtual clock. On PostgreSQL the store's clock is used: with the local clocks of two
 * services skewed by ±300 s, both stamp LastUpdate within a second of the server's.
 */
#include "support.h"

#include "service.h"

#include <math.h>
#include <time.h>

#define SKEW 300.0
#define DEAD 1800.0

/* A service whose clock is the shared virtual clock + @p skew seconds. */
typedef struct skewed_clock {
    double skew;
} skewed_clock;

static double skewed_now(void *ud)
{
    return test_clock_now(&g_clock) + ((skewed_clock *)ud)->skew;
}

static void skewed_sleep(double seconds, void *ud)
{
    (void)ud;
    test_clock_advance(&g_clock, seconds);
}

static ps_service *skewed_service(skewed_clock *clock, const char *job)
{
    ps_config config;
    test_config(&config, g_url, 3, job);
    config.clock = skewed_now;
    config.sleep = skewed_sleep;
    config.clock_userdata = clock;
    return test_service_from(&config, NULL);
}

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

static int g_handler_calls;

static ps_not_released_action cancel(int64_t place_id, const char *job_id, void *ud)
{
    (void)place_id, (void)job_id, (void)ud;
    g_handler_calls++;
    return PS_CANCEL;
}

/* One load attempt by @p loader that gives up when the lock is held: PS_OK (and the
 * profile, released at once) when the dead-lock rule let it take the session,
 * PS_ECANCELLED when the lock counted as live. */
static int try_take(ps_profile_store *loader, const char *key)
{
    ps_profile *p = NULL;
    g_handler_calls = 0;
    int rc = ps_store_load_profile(&p, loader, key, cancel, NULL);
    if (rc == PS_OK) {
        PS_ASSERT_EQ(g_handler_calls, 0);
        PS_ASSERT_OK(ps_profile_release(p));
        ps_profile_free(p);
    } else {
        PS_ASSERT_EQ(rc, PS_ECANCELLED);
        PS_ASSERT_EQ(g_handler_calls, 1);
    }
    return rc;
}

static double stored_last_update(const char *name, const char *key)
{
    json_t *doc = test_stored_doc(g_url, name, key);
    json_t *v = json_object_get(json_object_get(doc, "MetaData"), "LastUpdate");
    PS_ASSERT(json_is_number(v));
    double t = json_number_value(v);
    json_decref(doc);
    return t;
}

/* The owner's clock is @p owner_skew off the loader's. For two hours the owner keeps
 * auto-saving while the loader tries every 5 minutes: the lock is never taken. */
static void live_owner_case(double owner_skew)
{
    skewed_clock oc = {owner_skew}, lc = {0};
    ps_service *owner = skewed_service(&oc, "job-owner");
    ps_service *loader = skewed_service(&lc, "job-loader");
    const char *name = test_store_name("SkewLive");
    ps_profile_store *os = test_store(owner, name), *ls = test_store(loader, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, os, "k", NULL, NULL));
    for (int t = 0; t < 2 * 3600; t += 10) {
        test_clock_advance(&g_clock, 10);
        drain(owner);
        if (t % 300 == 0)
            PS_ASSERT_STATUS(try_take(ls, "k"), PS_ECANCELLED);
    }
    PS_ASSERT(ps_profile_is_active(p));
    /* Its stamps are on its own clock, owner_skew away from the loader's. */
    double gap = stored_last_update(name, "k") - skewed_now(&lc);
    PS_ASSERT(gap > owner_skew - 45 && gap <= owner_skew + 1);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(owner);
    ps_service_free(loader);
}

static void test_live_owner_never_stolen(void)
{
    live_owner_case(+SKEW);
    live_owner_case(-SKEW);
    live_owner_case(+2 * SKEW); /* two servers each 5 minutes off, opposite ways */
    live_owner_case(-2 * SKEW);
}

/* The owner saves once more and dies (no release, no more saves). The loader, whose
 * clock is owner_skew behind the owner's, finds the lock live until 1800 s +
 * owner_skew have passed since that save, and takes it just after. */
static void dead_owner_case(double owner_skew)
{
    skewed_clock oc = {owner_skew}, lc = {0};
    ps_service *owner = skewed_service(&oc, "job-dying");
    ps_service *loader = skewed_service(&lc, "job-heir");
    const char *name = test_store_name("SkewDead");
    ps_profile_store *os = test_store(owner, name), *ls = test_store(loader, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, os, "k", NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(77));
    PS_ASSERT_OK(ps_profile_save(p));
    drain(owner);
    double died = test_clock_now(&g_clock); /* true time of the last stamp */
    PS_ASSERT(fabs(stored_last_update(name, "k") - (floor(died + owner_skew))) < 1e-9);

    /* From here the owner never ticks again: it is dead. */
    double dead_at = died + DEAD + owner_skew; /* true time the lock expires */
    test_clock_advance(&g_clock, dead_at - 60 - test_clock_now(&g_clock));
    PS_ASSERT_STATUS(try_take(ls, "k"), PS_ECANCELLED);
    test_clock_advance(&g_clock, 120);
    PS_ASSERT_OK(try_take(ls, "k"));
    json_t *doc = test_stored_doc(g_url, name, "k");
    PS_ASSERT_EQ(json_integer_value(json_object_get(json_object_get(doc, "Data"),
                                                    "Coins")), 77);
    json_decref(doc);
    ps_profile_free(p);
    ps_service_free(loader);
    ps_service_free(owner); /* its late release finds the session gone: no write */
}

static void test_dead_owner_taken(void)
{
    dead_owner_case(+SKEW);
    dead_owner_case(-SKEW);
}

/* A LastUpdate far in the future comes from a clock gone wrong: the rule is two-sided,
 * so such a lock is dead at once instead of forever; one inside the window is live. */
static void test_future_last_update(void)
{
    skewed_clock lc = {0};
    ps_service *loader = skewed_service(&lc, "job-future");
    const char *name = test_store_name("SkewFuture");
    ps_profile_store *ls = test_store(loader, name);
    struct {
        const char *key;
        double ahead;
        int want;
    } cases[] = {{"soon", DEAD - 100, PS_ECANCELLED},
                 {"far", DEAD + 100, PS_OK},
                 {"year", 365 * 86400.0, PS_OK}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char doc[512];
        snprintf(doc, sizeof doc,
                 "{\"Data\":{},\"MetaData\":{\"ProfileCreateTime\":1,"
                 "\"SessionLoadCount\":4,\"ActiveSession\":[9,\"job-skewed\"],"
                 "\"MetaTags\":{},\"LastUpdate\":%.0f},\"GlobalUpdates\":[0,[]]}",
                 skewed_now(&lc) + cases[i].ahead);
        test_raw_put(g_url, name, cases[i].key, doc);
        PS_ASSERT_STATUS(try_take(ls, cases[i].key), cases[i].want);
    }
    ps_service_free(loader);
}

/* ---- PostgreSQL: the store's clock ------------------------------------------------ */

static double pg_now(void)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    PS_ASSERT(b->version >= 2 && b->server_time != NULL);
    double t = 0;
    PS_ASSERT_OK(b->server_time(&t, b));
    ps_backend_free(b);
    return t;
}

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A service on the system clock, its stamps skewed by @p skew (the test hook). */
static ps_service *real_service(const char *job, double skew)
{
    ps_config config;
    ps_config_init(&config);
    config.store_url = g_url;
    config.place_id = 4;
    config.job_id = job;
    ps_service *s = NULL;
    PS_ASSERT_OK(ps_service_new(&s, &config));
    ps__service_set_clock_skew(s, skew);
    return s;
}

static double load_stamp(ps_service *s, const char *name, const char *key)
{
    ps_profile_store *store = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, key, NULL, NULL));
    double t = stored_last_update(name, key);
    PS_ASSERT_EQ((long long)t, (long long)ps_profile_create_time(p));
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    return t;
}

/* Two servers whose local clocks are 10 minutes apart stamp one clock: the store's. */
static void test_store_clock_used(void)
{
    const char *name = test_store_name("SkewStoreClock");
    ps_service *ahead = real_service("job-ahead", +SKEW);
    ps_service *behind = real_service("job-behind", -SKEW);
    double before = pg_now();
    double a = load_stamp(ahead, name, "a");
    double b = load_stamp(behind, name, "b");
    double after = pg_now();
    printf("   server clock %.3f; stamps %.0f (local +%.0f s), %.0f (local -%.0f s); "
           "local clock %+.3f s from the server's\n", after, a, SKEW, b, SKEW,
           real_now() - after);
    PS_ASSERT(a >= floor(before) - 1 && a <= after + 1);
    PS_ASSERT(b >= floor(before) - 1 && b <= after + 1);
    PS_ASSERT(fabs(a - b) <= 1);
    ps_service_free(ahead);
    ps_service_free(behind);
}

/* Without a store clock (memory:, sqlite:) the same hook does move the stamps: proof
 * that the PostgreSQL result above comes from the store's clock. */
static void test_local_clock_used(void)
{
    const char *name = test_store_name("SkewLocalClock");
    ps_service *ahead = real_service("job-ahead-local", +SKEW);
    double a = load_stamp(ahead, name, "a");
    PS_ASSERT(fabs(a - (real_now() + SKEW)) <= 2);
    ps_service_free(ahead);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    if (!test_url_shares_store(g_url)) {
        printf("skipped: %s is not shared between handles (use memory:NAME)\n", g_url);
        return 77;
    }
    PS_RUN(test_live_owner_never_stolen);
    PS_RUN(test_dead_owner_taken);
    PS_RUN(test_future_last_update);
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    int store_clock = b->version >= 2 && b->server_time;
    ps_backend_free(b);
    if (store_clock)
        PS_RUN(test_store_clock_used);
    else
        PS_RUN(test_local_clock_used);
    printf("ok: clocks ±%.0f s apart keep live locks and release dead ones\n", SKEW);
    return 0;
}
