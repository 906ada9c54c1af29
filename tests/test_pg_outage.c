/* test_pg_outage.c — the PostgreSQL server stops for 10 s in the middle of a run and
 * starts again: the service keeps its profiles in memory, IssueSignal and
 * CriticalStateSignal fire, and after the restart every profile saves; nothing is
 * lost. Real clock (the outage is real). Run through tests/pg/with_postgres.sh, which
 * exports PS_TEST_POSTGRES_URL, PS_TEST_POSTGRES_STOP and PS_TEST_POSTGRES_START. */
#include "support.h"

#include <time.h>

enum { PROFILES = 20 };

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick_for(ps_service *s, double seconds)
{
    double end = now_seconds() + seconds;
    while (now_seconds() < end) {
        PS_ASSERT_OK(ps_service_update(s));
        usleep(5000);
    }
}

static void run_script(const char *env)
{
    const char *script = getenv(env);
    if (!script)
        PS_FAIL("%s is not set: run through tests/pg/with_postgres.sh", env);
    if (system(script) != 0)
        PS_FAIL("%s failed", env);
}

static json_int_t stored_coins(const char *store, const char *key)
{
    json_t *doc = test_stored_doc(g_url, store, key);
    json_int_t coins = json_integer_value(json_object_get(json_object_get(doc, "Data"),
                                                          "Coins"));
    json_decref(doc);
    return coins;
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    if (strncmp(g_url, "postgres", 8) != 0) {
        printf("skipped: needs a PostgreSQL url\n");
        return 77;
    }
    ps_config config;
    ps_config_init(&config);
    config.store_url = g_url;
    config.place_id = 7;
    config.auto_save_period = 1;
    config.load_repeat_delay = 0.5;
    ps_service *s = NULL;
    PS_ASSERT_OK(ps_service_new(&s, &config));
    test_recorder rec;
    memset(&rec, 0, sizeof rec);
    rec.host = pthread_self();
    PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, s, rec_issue, &rec, NULL));
    PS_ASSERT_OK(ps_service_critical_state_signal_connect(NULL, s, rec_critical, &rec,
                                                          NULL));
    const char *name = test_store_name("Outage");
    ps_profile_store *store = test_store(s, name);
    ps_profile *p[PROFILES];
    char key[16];
    for (int i = 0; i < PROFILES; i++) {
        snprintf(key, sizeof key, "p%d", i);
        PS_ASSERT_OK(ps_store_load_profile(&p[i], store, key, NULL, NULL));
    }

    run_script("PS_TEST_POSTGRES_STOP");
    printf("server stopped\n");
    /* Play goes on while the store is down: every profile changes. */
    for (int i = 0; i < PROFILES; i++)
        json_object_set_new(ps_profile_data(p[i]), "Coins", json_integer(100 + i));
    tick_for(s, 10);
    printf("during outage: %d issues, critical %d\n", rec.issues, rec.critical_on);
    PS_ASSERT(rec.issues >= 5);
    PS_ASSERT_EQ(rec.critical_on, 1);
    for (int i = 0; i < PROFILES; i++)
        PS_ASSERT(ps_profile_is_active(p[i])); /* kept in memory, still ours */

    run_script("PS_TEST_POSTGRES_START");
    printf("server started\n");
    int issues_before = rec.issues;
    tick_for(s, 4); /* a few auto-save cycles */
    for (int i = 0; i < PROFILES; i++) {
        snprintf(key, sizeof key, "p%d", i);
        PS_ASSERT_EQ(stored_coins(name, key), 100 + i);
        PS_ASSERT(ps_profile_is_active(p[i]));
    }
    printf("after restart: %d more issues; every profile saved\n", rec.issues - issues_before);
    PS_ASSERT_OK(ps_service_shutdown(s));
    for (int i = 0; i < PROFILES; i++)
        ps_profile_free(p[i]);
    ps_service_free(s);
    printf("ok\n");
    return 0;
}
