/* support.h — shared test fixtures: a virtual clock, a service on a given store URL,
 * a host-thread check and an issue/corruption recorder. Tests never sleep for real:
 * the service's sleep hook advances the virtual clock. */
#ifndef PS_TEST_SUPPORT_H
#define PS_TEST_SUPPORT_H

#include "test.h"

/* Each test uses some of these helpers. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <profileservice.h>
#include <profileservice/backend.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct test_clock {
    pthread_mutex_t lock;
    double now;
} test_clock;

static test_clock g_clock = {PTHREAD_MUTEX_INITIALIZER, 1700000000.0};

static double test_clock_now(void *userdata)
{
    test_clock *c = userdata;
    pthread_mutex_lock(&c->lock);
    double now = c->now;
    pthread_mutex_unlock(&c->lock);
    return now;
}

static void test_clock_advance(test_clock *c, double seconds)
{
    pthread_mutex_lock(&c->lock);
    c->now += seconds;
    pthread_mutex_unlock(&c->lock);
}

static void test_clock_sleep(double seconds, void *userdata)
{
    test_clock_advance(userdata, seconds);
}

/* Records signals; asserts every listener runs on the host thread. */
typedef struct test_recorder {
    pthread_t host;
    int issues, corruptions, critical_on, critical_off;
    char last_issue[512];
    char last_corrupt_key[64];
} test_recorder;

static void rec_check_thread(test_recorder *r)
{
    if (!pthread_equal(pthread_self(), r->host))
        PS_FAIL("listener ran off the host thread");
}

static void rec_issue(const char *message, const char *store, const char *key, void *ud)
{
    test_recorder *r = ud;
    (void)store;
    (void)key;
    rec_check_thread(r);
    r->issues++;
    snprintf(r->last_issue, sizeof r->last_issue, "%s", message);
}

static void rec_corruption(const char *store, const char *key, void *ud)
{
    test_recorder *r = ud;
    (void)store;
    rec_check_thread(r);
    r->corruptions++;
    snprintf(r->last_corrupt_key, sizeof r->last_corrupt_key, "%s", key ? key : "");
}

static void rec_critical(int on, void *ud)
{
    test_recorder *r = ud;
    rec_check_thread(r);
    if (on)
        r->critical_on++;
    else
        r->critical_off++;
}

/* A service on @p url with the virtual clock and the given session tag. */
static ps_service *test_service(const char *url, int64_t place, const char *job,
                                test_recorder *rec)
{
    ps_config config;
    ps_config_init(&config);
    config.store_url = url;
    config.place_id = place;
    config.job_id = job;
    config.clock = test_clock_now;
    config.sleep = test_clock_sleep;
    config.clock_userdata = &g_clock;
    ps_service *s = NULL;
    PS_ASSERT_OK(ps_service_new(&s, &config));
    if (rec) {
        memset(rec, 0, sizeof *rec);
        rec->host = pthread_self();
        PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, s, rec_issue, rec, NULL));
        PS_ASSERT_OK(ps_service_corruption_signal_connect(NULL, s, rec_corruption, rec,
                                                          NULL));
        PS_ASSERT_OK(ps_service_critical_state_signal_connect(NULL, s, rec_critical, rec,
                                                              NULL));
    }
    return s;
}

static json_t *test_template(void)
{
    return json_pack("{s:i, s:[s], s:{s:b}}", "Coins", 0, "Items", "sword", "Settings",
                     "Music", 1);
}

static ps_profile_store *test_store(ps_service *s, const char *name)
{
    json_t *t = test_template();
    ps_profile_store *store = NULL;
    PS_ASSERT_OK(ps_service_get_profile_store(&store, s, name, t));
    json_decref(t);
    return store;
}

/* Runs ticks (advancing virtual time by @p step each) until *flag or @p max ticks. */
static void test_tick_until(ps_service *s, const int *flag, double step, int max)
{
    for (int i = 0; i < max && !*flag; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        if (*flag)
            break;
        test_clock_advance(&g_clock, step);
        usleep(1000);
    }
}

/* Reads the stored document of a key straight from a backend. */
static json_t *test_stored_doc(const char *url, const char *store, const char *key)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, url));
    ps_bytes bytes = {NULL, 0};
    int rc = b->get(&bytes, b, store, key);
    json_t *doc = NULL;
    if (rc == PS_OK) {
        doc = json_loadb(bytes.data, bytes.len, 0, NULL);
        PS_ASSERT(doc != NULL);
    } else {
        PS_ASSERT_EQ(rc, PS_ENOTFOUND);
    }
    ps_bytes_dispose(&bytes);
    ps_backend_free(b);
    return doc;
}

/* Makes the next ps_error_last() stale, so a test sees whether a call set it. */
static void stale_error(void)
{
    ps_error_set(PS_ENOTFOUND, "stale");
}

/* The last call failed with @p code and a fresh, non-empty message. */
static void assert_error(int code)
{
    PS_ASSERT_EQ(ps_error_last()->code, code);
    PS_ASSERT(ps_error_last()->message && *ps_error_last()->message);
    PS_ASSERT(strcmp(ps_error_last()->message, "stale") != 0);
}

#endif /* PS_TEST_SUPPORT_H */

/* The URL under test (argv[1]); an sqlite file is removed first so runs start clean.
 * Store names carry the pid so runs never see each other's keys on a shared server. */
static const char *g_url = "memory:";

static void test_use_url(int argc, char **argv)
{
    if (argc > 1)
        g_url = argv[1];
    if (strncmp(g_url, "env:", 4) == 0) {
        g_url = getenv(g_url + 4);
        if (!g_url || !*g_url) {
            printf("skipped: %s is not set\n", argv[1] + 4);
            exit(77);
        }
    }
    if (strncmp(g_url, "sqlite:", 7) == 0) {
        char path[1024];
        const char *suffixes[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s%s", g_url + 7, suffixes[i]);
            unlink(path);
        }
    }
    printf("store url: %s\n", strncmp(g_url, "postgres", 8) == 0 ? "postgres://…" : g_url);
}

static const char *test_store_name(const char *base)
{
    static char names[64][64];
    static int next;
    char *name = names[next++ % 64];
    snprintf(name, 64, "%s-%ld", base, (long)getpid());
    return name;
}

/* ---- added for test_profile.c / test_service.c ------------------------------------- */

/* Connects @p rec to the three service signals (as test_service does). */
static void test_recorder_connect(ps_service *s, test_recorder *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->host = pthread_self();
    PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, s, rec_issue, rec, NULL));
    PS_ASSERT_OK(
        ps_service_corruption_signal_connect(NULL, s, rec_corruption, rec, NULL));
    PS_ASSERT_OK(ps_service_critical_state_signal_connect(NULL, s, rec_critical, rec,
                                                          NULL));
}

/* Defaults on @p url with the virtual clock and the given session tag; the caller may
 * change anything (backend, limits) before test_service_from. */
static void test_config(ps_config *config, const char *url, int64_t place,
                        const char *job)
{
    ps_config_init(config);
    config->store_url = url;
    config->place_id = place;
    config->job_id = job;
    config->clock = test_clock_now;
    config->sleep = test_clock_sleep;
    config->clock_userdata = &g_clock;
}

/* A service from a config made by test_config; @p rec (may be NULL) is connected. */
static ps_service *test_service_from(const ps_config *config, test_recorder *rec)
{
    ps_service *s = NULL;
    PS_ASSERT_OK(ps_service_new(&s, config));
    if (rec)
        test_recorder_connect(s, rec);
    return s;
}

static int test_raw_put_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    (void)current;
    const char *text = ud;
    return ps_bytes_set(&out->doc, text, strlen(text));
}

/* Stores @p text as the raw value of a key through a fresh backend handle. */
static void test_raw_put(const char *url, const char *store, const char *key,
                         const char *text)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, url));
    PS_ASSERT_OK(b->update(b, store, key, test_raw_put_transform, (void *)text));
    ps_backend_free(b);
}

/* The raw stored bytes of a key (malloc'd, caller frees), or NULL when absent. */
static char *test_raw_get(const char *url, const char *store, const char *key)
{
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, url));
    ps_bytes bytes = {NULL, 0};
    int rc = b->get(&bytes, b, store, key);
    if (rc != PS_OK)
        PS_ASSERT_EQ(rc, PS_ENOTFOUND);
    ps_backend_free(b);
    return rc == PS_OK ? bytes.data : NULL;
}

/* Nonzero when two backend handles opened on @p url see one store (sqlite files and
 * memory:NAME do; a bare memory: does not): only then can a test read what a service
 * stored, or run two services on one store. */
static int test_url_shares_store(const char *url)
{
    char key[64];
    snprintf(key, sizeof key, "probe-%ld", (long)getpid());
    ps_backend *a = NULL, *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&a, url));
    PS_ASSERT_OK(ps_backend_open(&b, url));
    PS_ASSERT_OK(
        a->update(a, "__share_probe", key, test_raw_put_transform, (void *)"{}"));
    ps_bytes bytes = {NULL, 0};
    int shared = b->get(&bytes, b, "__share_probe", key) == PS_OK;
    ps_bytes_dispose(&bytes);
    if (a->remove)
        a->remove(a, "__share_probe", key);
    ps_backend_free(a);
    ps_backend_free(b);
    return shared;
}

/* A JSON file of the source tree (path relative to tests/), parsed; new reference. */
static json_t *test_load_fixture(const char *relative)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/%s", PS_SOURCE_DIR, relative);
    json_error_t error;
    json_t *doc = json_load_file(path, 0, &error);
    if (!doc)
        PS_FAIL("cannot load %s: %s", path, error.text);
    return doc;
}

/* Ticks without moving the virtual clock until *flag, waiting a little for the
 * workers between ticks (at most about @p max_ms of real time). */
static void test_settle_until(ps_service *s, const int *flag, int max_ms)
{
    for (int i = 0; i < max_ms * 5 && !*flag; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        if (!*flag)
            usleep(200);
    }
}
