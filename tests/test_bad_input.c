/*
 * test_bad_input.c — the bad-input matrix (issue #8): every public function of
 * profileservice.h and the backend helpers of profileservice/backend.h, called with
 * NULL, empty, over-long (51 bytes), non-UTF-8 and wrong-typed arguments, and in the
 * wrong state (after release, after shutdown, after the service was freed, on a view,
 * on a read-only result, on another server's profile, handler-only methods outside a
 * handler, owner-only methods inside one, blocking calls inside a listener).
 *
 * Each bad call must return its documented status with a fresh, non-empty message;
 * nothing crashes; a json_t the call borrows keeps its reference count and one it
 * steals is released, even on failure; and nothing stored changes: the raw bytes of
 * the keys involved are compared before and after, and a counting shim over the
 * backend asserts that no write reached the store at all.
 *
 * Also the size limit on every backend (PostgreSQL included): an over-limit save is
 * refused, the stored document stays intact, the profile stays active, and the next
 * save after shrinking succeeds.
 *
 * Run as `test_bad_input URL` (memory:NAME, sqlite:PATH, env:PS_TEST_POSTGRES_URL).
 * Where the code and the header disagree, the check is listed in mismatches[] below
 * with the file and line; it is reported, not failed, until one of them is fixed
 * (PS_TEST_STRICT=1 fails on it).
 */
#include "support.h"

#include <math.h>
#include <stdarg.h>

/* ---- fresh-error checks ------------------------------------------------------------ */

static int g_checks, g_mismatches;

/* A sentinel that no call sets: a failing call must replace it. */
static void stale(void)
{
    ps_error_set(12345, "stale message");
}

/* The call failed with @p want: the thread's error is that code with a new,
 * non-empty message. */
static void check_error(int got, int want, const char *what, int line)
{
    const ps_error *e = ps_error_last();
    g_checks++;
    if (got != want)
        PS_FAIL("line %d: %s returned %s, want %s (%s)", line, what, ps_status_name(got),
                ps_status_name(want), e->message);
    if (want == PS_OK)
        return;
    if (e->code != want)
        PS_FAIL("line %d: %s: ps_error_last()->code is %s, want %s", line, what,
                ps_status_name(e->code), ps_status_name(want));
    if (!e->message || !e->message[0] || strcmp(e->message, "stale message") == 0 ||
        strcmp(e->message, "no error") == 0)
        PS_FAIL("line %d: %s: no fresh message (\"%s\")", line, what,
                e->message ? e->message : "(null)");
}

#define BAD(call, want)                                                                  \
    do {                                                                                 \
        stale();                                                                         \
        int bad_rc_ = (call);                                                            \
        check_error(bad_rc_, (want), #call, __LINE__);                                   \
    } while (0)

/* For calls that return a pointer: NULL, with a fresh message of code @p want. */
#define BAD_NULL(call, want)                                                             \
    do {                                                                                 \
        stale();                                                                         \
        const void *bad_p_ = (call);                                                     \
        if (bad_p_ != NULL)                                                              \
            PS_FAIL("line %d: %s is not NULL", __LINE__, #call);                         \
        check_error(ps_error_last()->code, (want), #call, __LINE__);                     \
    } while (0)

/* A documented behaviour the code does not have (see the report in issue #8). The
 * check is reported; PS_TEST_STRICT=1 makes it fail. */
static void mismatch(int ok, const char *where, const char *fmt, ...)
{
    va_list ap;
    if (ok)
        return;
    g_mismatches++;
    printf("MISMATCH (%s): ", where);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    const char *strict = getenv("PS_TEST_STRICT");
    if (strict && strcmp(strict, "1") == 0)
        PS_FAIL("header and code disagree (PS_TEST_STRICT=1)");
}

/* ---- reference counts -------------------------------------------------------------- */

#define ASSERT_REFS(v, n)                                                                \
    do {                                                                                 \
        if ((v)->refcount != (size_t)(n))                                                \
            PS_FAIL("refcount of %s is %zu, want %d", #v, (size_t)(v)->refcount,         \
                    (int)(n));                                                           \
    } while (0)

/* A value whose reference the caller keeps: a stealing call must drop only its own. */
static json_t *kept(json_t *v)
{
    PS_ASSERT(v != NULL);
    return json_incref(v); /* refcount 2: one for the call to steal, one for us */
}

/* ---- bad strings ------------------------------------------------------------------- */

static char g_long[52];     /* 51 bytes */
static char g_max[51];      /* 50 bytes: the longest valid name */
static char g_max_utf8[51]; /* 50 bytes of 2-byte characters */

static const char *const bad_names[] = {
    "",
    g_long,
    "\xff",
    "abc\xc3",          /* truncated sequence */
    "\xc0\x80",         /* overlong NUL */
    "\xed\xa0\x80",     /* a UTF-16 surrogate */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xe0\x80\xaf",     /* overlong '/' */
};
#define N_BAD_NAMES (sizeof bad_names / sizeof *bad_names)

static void init_names(void)
{
    memset(g_long, 'x', 51);
    g_long[51] = '\0';
    memset(g_max, 'y', 50);
    g_max[50] = '\0';
    for (int i = 0; i < 25; i++)
        memcpy(g_max_utf8 + 2 * i, "\xc3\xa9", 2); /* é */
    g_max_utf8[50] = '\0';
}

/* ---- a counting shim over the backend under test ------------------------------------
 */

typedef struct count_backend {
    ps_backend parent;
    ps_backend *inner;
    atomic_int writes; /* updates whose transform asked to write */
} count_backend;

typedef struct count_call {
    ps_transform_fn fn;
    void *userdata;
    int wrote;
} count_call;

static int count_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    count_call *c = ud;
    int rc = c->fn(out, current, c->userdata);
    c->wrote = rc == PS_OK && out->doc.data != NULL;
    return rc;
}

static int count_update(ps_backend *b, const char *store, const char *key,
                        ps_transform_fn fn, void *userdata)
{
    count_backend *cb = (count_backend *)b;
    count_call c = {fn, userdata, 0};
    int rc = cb->inner->update(cb->inner, store, key, count_transform, &c);
    if (rc == PS_OK && c.wrote)
        atomic_fetch_add(&cb->writes, 1);
    return rc;
}

static int count_get(ps_bytes *out, ps_backend *b, const char *store, const char *key)
{
    count_backend *cb = (count_backend *)b;
    return cb->inner->get(out, cb->inner, store, key);
}

static void count_free(ps_backend *b)
{
    count_backend *cb = (count_backend *)b;
    ps_backend_free(cb->inner);
    free(cb);
}

/* A service on g_url behind a counting shim (the service owns the shim). */
static ps_service *counted_service(count_backend **out, int64_t place, const char *job,
                                   test_recorder *rec, size_t max_doc)
{
    ps_config config;
    test_config(&config, g_url, place, job);
    count_backend *cb = calloc(1, sizeof *cb);
    PS_ASSERT(cb != NULL);
    PS_ASSERT_OK(ps_backend_init(&cb->parent, PS_BACKEND_VERSION));
    PS_ASSERT_OK(ps_backend_open(&cb->inner, g_url));
    cb->parent.get = count_get;
    cb->parent.update = count_update;
    cb->parent.free = count_free;
    config.backend = &cb->parent;
    if (max_doc)
        config.max_document_size = max_doc;
    *out = cb;
    return test_service_from(&config, rec);
}

/* Ticks (no virtual time passes) and lets workers run for a while: anything a bad
 * call queued by mistake would be written by now. */
static void settle(ps_service *s)
{
    for (int i = 0; i < 100; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        usleep(500);
    }
}

/* Raw stored bytes of the keys a test watches. */
typedef struct watch {
    const char *store;
    const char *keys[4];
    char *bytes[4];
} watch;

static void watch_free(watch *w)
{
    for (int i = 0; i < 4; i++) {
        free(w->bytes[i]);
        w->bytes[i] = NULL;
    }
}

static void watch_take(watch *w)
{
    watch_free(w);
    for (int i = 0; i < 4 && w->keys[i]; i++)
        w->bytes[i] = test_raw_get(g_url, w->store, w->keys[i]);
}

/* Asserts every watched key holds the bytes it held at watch_take; frees them. */
static void watch_same(watch *w, const char *when)
{
    for (int i = 0; i < 4 && w->keys[i]; i++) {
        char *now = test_raw_get(g_url, w->store, w->keys[i]);
        int same = (!now && !w->bytes[i]) ||
                   (now && w->bytes[i] && strcmp(now, w->bytes[i]) == 0);
        if (!same)
            PS_FAIL("%s: stored bytes of %s/%s changed:\nbefore %s\nafter  %s", when,
                    w->store, w->keys[i], w->bytes[i] ? w->bytes[i] : "(absent)",
                    now ? now : "(absent)");
        free(now);
        free(w->bytes[i]);
        w->bytes[i] = NULL;
    }
}

/* ---- listeners and handlers used by the matrix ---------------------------------------
 */

static int g_free_userdata_calls;
static void count_free_userdata(void *ud)
{
    (void)ud;
    g_free_userdata_calls++;
}

static void on_issue(const char *m, const char *s, const char *k, void *ud)
{
    (void)m, (void)s, (void)k, (void)ud;
}
static void on_corruption(const char *s, const char *k, void *ud)
{
    (void)s, (void)k, (void)ud;
}
static void on_critical(int on, void *ud)
{
    (void)on, (void)ud;
}
static void on_release(ps_profile *p, int64_t place, const char *job, void *ud)
{
    (void)p, (void)place, (void)job;
    if (ud)
        (*(int *)ud)++;
}
static void on_update(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    (void)gu, (void)id, (void)data, (void)ud;
}
static void on_profile_done(int status, ps_profile *p, void *ud)
{
    (void)status;
    ps_profile_free(p);
    if (ud)
        (*(int *)ud)++;
}
static void on_gu_done(int status, ps_global_updates *r, void *ud)
{
    (void)status;
    ps_global_updates_free(r);
    if (ud)
        (*(int *)ud)++;
}
static ps_not_released_action steal_handler(int64_t place, const char *job, void *ud)
{
    (void)place, (void)job, (void)ud;
    return PS_STEAL;
}

/* A gift handler: adds one update. */
static void add_gift(ps_global_updates *gu, void *ud)
{
    (void)ud;
    json_t *gift = json_pack("{s:s,s:i}", "Type", "Gift", "Amount", 5);
    PS_ASSERT_OK(ps_global_updates_add_active_update_new(gu, gift, NULL));
}

/* Stores a profile under @p key with one Active and (after a lock + save) one Locked
 * update, then releases it; the raw document is left in the store. */
static void seed_key(ps_service *s, ps_profile_store *st, const char *key)
{
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, st, key, NULL, NULL));
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    settle(s);
    PS_ASSERT_OK(ps_store_global_update_profile(NULL, st, key, add_gift, NULL));
    PS_ASSERT_OK(ps_store_global_update_profile(NULL, st, key, add_gift, NULL));
}

/* Waits until the raw bytes of a key differ from @p before (real time, ticks). */
static char *wait_stored_change(ps_service *s, const char *store, const char *key,
                                const char *before)
{
    for (int i = 0; i < 4000; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        char *now = test_raw_get(g_url, store, key);
        if (now && (!before || strcmp(now, before) != 0))
            return now;
        free(now);
        usleep(1000);
    }
    PS_FAIL("%s/%s was never written", store, key);
}

/* ================================================================================== */
/* Thread-safe helpers: errors, status names, config, connections                    */

static void *fresh_thread(void *arg)
{
    (void)arg;
    const ps_error *e = ps_error_last();
    PS_ASSERT(e != NULL);
    PS_ASSERT_EQ(e->code, PS_OK);
    PS_ASSERT_STR_EQ(e->message, "no error");
    return NULL;
}

static void test_errors_and_names(void)
{
    pthread_t t;
    PS_ASSERT_EQ(pthread_create(&t, NULL, fresh_thread, NULL), 0);
    PS_ASSERT_EQ(pthread_join(t, NULL), 0);
    static const int codes[] = {PS_OK,        PS_EINVAL,   PS_ENOTFOUND, PS_ELOCKED,
                                PS_ECONFLICT, PS_ECORRUPT, PS_ETOOBIG,   PS_ERELEASED,
                                PS_ESHUTDOWN, PS_EBACKEND, PS_ENOMEM,    PS_ECANCELLED,
                                PS_EVIEW};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        const char *n = ps_status_name(codes[i]);
        PS_ASSERT(n && strncmp(n, "PS_", 3) == 0 && strcmp(n, "PS_UNKNOWN") != 0);
    }
    PS_ASSERT_STR_EQ(ps_status_name(1), "PS_UNKNOWN");
    PS_ASSERT_STR_EQ(ps_status_name(-13), "PS_UNKNOWN");
    PS_ASSERT_STR_EQ(ps_status_name(-2147483647 - 1), "PS_UNKNOWN");
    /* ps_error_set: printf-style, returns its code; a huge message is cut, not
     * overflowed. */
    char big[4096];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    PS_ASSERT_EQ(ps_error_set(PS_EBACKEND, "%s", big), PS_EBACKEND);
    PS_ASSERT(strlen(ps_error_last()->message) < sizeof big - 1);
    PS_ASSERT_EQ(ps_error_set(PS_EINVAL, "x %d", 7), PS_EINVAL);
    PS_ASSERT_STR_EQ(ps_error_last()->message, "x 7");
    ps_config_init(NULL); /* accepted: nothing to fill */
    ps_connection_disconnect(NULL);
    ps_service_free(NULL);
    ps_profile_free(NULL);
    ps_global_updates_free(NULL);
    ps_backend_free(NULL);
    ps_bytes_dispose(NULL);
}

/* ================================================================================== */
/* backend.h: ps_backend_open, ps_backend_init, ps_backend_check, ps_bytes_*          */

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
static int g_dummy_frees;
static void dummy_free(ps_backend *b)
{
    g_dummy_frees++;
    free(b);
}

static ps_backend *dummy_new(unsigned version)
{
    ps_backend *b = calloc(1, sizeof *b);
    PS_ASSERT(b != NULL);
    b->version = version;
    b->get = dummy_get;
    b->update = dummy_update;
    b->free = dummy_free;
    return b;
}

static void test_backend_api(void)
{
    ps_backend *b = (ps_backend *)&b;
    BAD(ps_backend_open(NULL, "memory:"), PS_EINVAL);
    BAD(ps_backend_open(&b, NULL), PS_EINVAL);
    PS_ASSERT(b == NULL);
    BAD(ps_backend_open(&b, ""), PS_EINVAL);
    BAD(ps_backend_open(&b, "sqlite:"), PS_EINVAL);
    BAD(ps_backend_open(&b, "\xff\xfe:x"), PS_EINVAL);
    BAD(ps_backend_open(&b, "memory"), PS_EINVAL);
    BAD(ps_backend_open(&b, "MEMORY:"), PS_EINVAL);
    char url[300];
    memset(url, 'a', sizeof url - 1);
    url[sizeof url - 1] = '\0';
    url[200] = ':';
    BAD(ps_backend_open(&b, url), PS_EINVAL);
    PS_ASSERT(strlen(ps_error_last()->message) < 200); /* the scheme is cut short */
    PS_ASSERT(b == NULL);

    ps_backend raw;
    BAD(ps_backend_init(NULL, PS_BACKEND_VERSION), PS_EINVAL);
    BAD(ps_backend_init(&raw, 0), PS_EINVAL);
    BAD(ps_backend_init(&raw, PS_BACKEND_VERSION + 1), PS_EINVAL);
    PS_ASSERT_OK(ps_backend_init(&raw, PS_BACKEND_VERSION));
    PS_ASSERT(raw.get == NULL && raw.update == NULL && raw.free == NULL);
    ps_backend init = PS_BACKEND_INIT;
    PS_ASSERT_EQ(init.version, PS_BACKEND_VERSION);

    BAD(ps_backend_check(NULL), PS_EINVAL);
    BAD(ps_backend_check(&raw), PS_EINVAL); /* no members */
    ps_backend *d = dummy_new(PS_BACKEND_VERSION);
    PS_ASSERT_OK(ps_backend_check(d));
    d->version = 0;
    BAD(ps_backend_check(d), PS_EINVAL);
    d->version = PS_BACKEND_VERSION + 1;
    BAD(ps_backend_check(d), PS_EINVAL);
    d->version = PS_BACKEND_VERSION;
    d->get = NULL;
    BAD(ps_backend_check(d), PS_EINVAL);
    d->get = dummy_get;
    d->update = NULL;
    BAD(ps_backend_check(d), PS_EINVAL);
    d->update = dummy_update;
    d->free = NULL;
    BAD(ps_backend_check(d), PS_EINVAL);
    free(d);

    ps_bytes bytes = {(char *)"untouched", 9};
    BAD(ps_bytes_set(NULL, "x", 1), PS_EINVAL);
    BAD(ps_bytes_set(&bytes, NULL, 5), PS_EINVAL);
    PS_ASSERT_STR_EQ(bytes.data, "untouched"); /* left as it was */
    BAD(ps_bytes_set(&bytes, "x", SIZE_MAX), PS_ENOMEM);
    PS_ASSERT_EQ(bytes.len, 9);
    PS_ASSERT_OK(ps_bytes_set(&bytes, NULL, 0));
    PS_ASSERT(bytes.data && bytes.data[0] == '\0' && bytes.len == 0);
    ps_bytes_dispose(&bytes);
    PS_ASSERT(bytes.data == NULL && bytes.len == 0);
    ps_bytes_dispose(&bytes); /* twice: harmless */
    PS_ASSERT_OK(ps_bytes_set(&bytes, "a\0b", 3));
    PS_ASSERT(bytes.len == 3 && memcmp(bytes.data, "a\0b", 4) == 0);
    ps_bytes_dispose(&bytes);
}

/* ================================================================================== */
/* ps_service_new and the config                                                     */

static void expect_config_rejected(ps_config *c, int want, const char *why)
{
    ps_service *s = (ps_service *)&s;
    stale();
    int rc = ps_service_new(&s, c);
    check_error(rc, want, why, __LINE__);
    PS_ASSERT(s == NULL);
}

static void test_service_new(void)
{
    ps_config c;
    ps_service *s = (ps_service *)&s;
    test_config(&c, g_url, 1, "job-new");
    BAD(ps_service_new(NULL, &c), PS_EINVAL);
    BAD(ps_service_new(&s, NULL), PS_EINVAL);

    c.version = 0;
    expect_config_rejected(&c, PS_EINVAL, "version 0");
    c.version = PS_CONFIG_VERSION + 1;
    expect_config_rejected(&c, PS_EINVAL, "version + 1");
    const struct {
        double *field;
        double value;
    } timings[] = {
        {&c.auto_save_period, 0},         {&c.auto_save_period, -1},
        {&c.write_cooldown, -1},          {&c.load_repeat_delay, -0.5},
        {&c.assume_dead_session_lock, 0}, {&c.issue_last, 0},
        {&c.critical_state_last, -1},     {&c.auto_save_period, NAN},
    };
    for (size_t i = 0; i < sizeof timings / sizeof *timings; i++) {
        test_config(&c, g_url, 1, "job-new");
        *timings[i].field = timings[i].value;
        expect_config_rejected(&c, PS_EINVAL, "bad timing");
    }
    test_config(&c, g_url, 1, "job-new");
    c.force_load_max_steps = 0;
    expect_config_rejected(&c, PS_EINVAL, "force_load_max_steps 0");
    test_config(&c, g_url, 1, "job-new");
    c.issue_count_for_critical_state = -1;
    expect_config_rejected(&c, PS_EINVAL, "issue count -1");
    test_config(&c, g_url, 1, "job-new");
    c.max_document_size = 0;
    expect_config_rejected(&c, PS_EINVAL, "max_document_size 0");
    const char *bad_jobs[] = {"", "\xff", "\xed\xa0\x80"};
    for (size_t i = 0; i < 3; i++) {
        test_config(&c, g_url, 1, bad_jobs[i]);
        expect_config_rejected(&c, PS_EINVAL, "bad job id");
    }
    char long_job[300];
    memset(long_job, 'j', sizeof long_job - 1);
    long_job[sizeof long_job - 1] = '\0';
    test_config(&c, g_url, 1, long_job);
    expect_config_rejected(&c, PS_EINVAL, "job id of 299 bytes");
    const char *bad_urls[] = {"nope", "sqlite:", "mysql://u:pw@h/db", "\xff:"};
    for (size_t i = 0; i < 4; i++) {
        test_config(&c, bad_urls[i], 1, "job-new");
        expect_config_rejected(&c, PS_EINVAL, "bad url");
    }
    /* "" is no URL: the header says a bad URL is PS_EINVAL; the code opens the
     * default store, sqlite:profiles.db in the working directory (src/service.c
     * open_backend: `if (!url || !*url)`). Checked in a scratch directory. */
    char cwd[1024], dir[] = "/tmp/ps-bad-input-XXXXXX";
    PS_ASSERT(getcwd(cwd, sizeof cwd) != NULL && mkdtemp(dir) != NULL);
    PS_ASSERT_EQ(chdir(dir), 0);
    test_config(&c, "", 1, "job-new");
    s = NULL;
    stale();
    int rc = ps_service_new(&s, &c);
    mismatch(rc == PS_EINVAL, "src/service.c open_backend",
             "store_url \"\" opens sqlite:profiles.db in the working directory instead "
             "of failing with PS_EINVAL (got %s)",
             ps_status_name(rc));
    ps_service_free(s);
    PS_ASSERT_EQ(chdir(cwd), 0);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    PS_ASSERT_EQ(system(cmd), 0);

    /* A backend passed in config is the service's on every path: freed exactly once,
     * whatever fails. */
    const unsigned versions[] = {PS_BACKEND_VERSION, 0, PS_BACKEND_VERSION + 1};
    for (size_t i = 0; i < 3; i++) {
        g_dummy_frees = 0;
        test_config(&c, NULL, 1, "job-new");
        c.backend = dummy_new(versions[i]);
        if (i == 0)
            c.version = 0; /* bad config, good backend */
        expect_config_rejected(&c, PS_EINVAL, "backend given, service refused");
        PS_ASSERT_EQ(g_dummy_frees, 1);
    }
    g_dummy_frees = 0;
    test_config(&c, NULL, 1, "job-new");
    c.backend = dummy_new(PS_BACKEND_VERSION);
    BAD(ps_service_new(NULL, &c), PS_EINVAL);
    PS_ASSERT_EQ(g_dummy_frees, 1);
    g_dummy_frees = 0;
    c.backend = dummy_new(PS_BACKEND_VERSION);
    c.backend->get = NULL;
    expect_config_rejected(&c, PS_EINVAL, "backend without get");
    PS_ASSERT_EQ(g_dummy_frees, 1);
}

/* ================================================================================== */
/* NULL objects: every function that takes one                                       */

static void test_null_objects(void)
{
    json_t *t = test_template();
    json_t *v = json_integer(1);
    json_t *out = (json_t *)&out;
    ps_profile_store *st = (ps_profile_store *)&st;
    ps_profile *p = (ps_profile *)&p;
    ps_global_updates *gr = (ps_global_updates *)&gr;
    int64_t place = 99;
    const char *job = "untouched";

    BAD(ps_service_update(NULL), PS_EINVAL);
    BAD(ps_service_shutdown(NULL), PS_EINVAL);
    PS_ASSERT(ps_service_locked(NULL) != 0);
    PS_ASSERT_EQ(ps_service_place_id(NULL), 0);
    PS_ASSERT(ps_service_job_id(NULL) == NULL);
    PS_ASSERT_EQ(ps_service_is_critical_state(NULL), 0);
    g_free_userdata_calls = 0;
    BAD(ps_service_issue_signal_connect(NULL, NULL, on_issue, NULL, count_free_userdata),
        PS_EINVAL);
    BAD(ps_service_corruption_signal_connect(NULL, NULL, on_corruption, NULL,
                                             count_free_userdata),
        PS_EINVAL);
    BAD(ps_service_critical_state_signal_connect(NULL, NULL, on_critical, NULL,
                                                 count_free_userdata),
        PS_EINVAL);
    PS_ASSERT_EQ(g_free_userdata_calls, 0); /* "free_userdata is not run then" */
    BAD(ps_service_get_profile_store(&st, NULL, "Store", t), PS_EINVAL);
    BAD(ps_service_get_profile_store(NULL, NULL, "Store", t), PS_EINVAL);
    ASSERT_REFS(t, 1);

    BAD(ps_store_load_profile(&p, NULL, "k", NULL, NULL), PS_EINVAL);
    PS_ASSERT(p == NULL);
    BAD(ps_store_load_profile_async(NULL, "k", NULL, on_profile_done, NULL), PS_EINVAL);
    p = (ps_profile *)&p;
    BAD(ps_store_view_profile(&p, NULL, "k"), PS_EINVAL);
    PS_ASSERT(p == NULL);
    BAD(ps_store_view_profile_async(NULL, "k", on_profile_done, NULL), PS_EINVAL);
    PS_ASSERT(ps_store_name(NULL) == NULL);
    BAD(ps_store_global_update_profile(&gr, NULL, "k", add_gift, NULL), PS_EINVAL);
    PS_ASSERT(gr == NULL);
    BAD(ps_store_global_update_profile_async(NULL, "k", add_gift, on_gu_done, NULL),
        PS_EINVAL);

    PS_ASSERT(ps_profile_data(NULL) == NULL);
    PS_ASSERT(ps_profile_meta_data(NULL) == NULL);
    PS_ASSERT(ps_profile_create_time(NULL) == 0);
    PS_ASSERT_EQ(ps_profile_session_load_count(NULL), 0);
    PS_ASSERT_EQ(ps_profile_active_session(NULL, &place, &job), 0);
    PS_ASSERT(place == 99 && strcmp(job, "untouched") == 0); /* outputs untouched */
    PS_ASSERT(ps_profile_meta_tags(NULL) == NULL);
    PS_ASSERT(ps_profile_meta_tags_latest(NULL) == NULL);
    PS_ASSERT(ps_profile_key(NULL) == NULL);
    PS_ASSERT(ps_profile_store_of(NULL) == NULL);
    PS_ASSERT_EQ(ps_profile_is_active(NULL), 0);
    BAD_NULL(ps_profile_get_meta_tag(NULL, "tag"), PS_EINVAL);
    BAD(ps_profile_set_meta_tag(NULL, "tag", v), PS_EINVAL);
    ASSERT_REFS(v, 1); /* borrowed */
    BAD(ps_profile_set_meta_tag_new(NULL, "tag", kept(v)), PS_EINVAL);
    ASSERT_REFS(v, 1); /* stolen even on failure */
    g_free_userdata_calls = 0;
    BAD(ps_profile_listen_to_release(NULL, NULL, on_release, NULL, count_free_userdata),
        PS_EINVAL);
    PS_ASSERT_EQ(g_free_userdata_calls, 0);
    BAD(ps_profile_release(NULL), PS_EINVAL);
    BAD(ps_profile_save(NULL), PS_EINVAL);
    json_t *obj = json_object();
    BAD(ps_profile_set_data_new(NULL, kept(obj)), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_profile_set_meta_tags_new(NULL, kept(obj)), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_profile_set_before_save(NULL, NULL, NULL), PS_EINVAL);

    BAD_NULL(ps_profile_global_updates(NULL), PS_EINVAL);
    BAD(ps_global_updates_get_active_updates(&out, NULL), PS_EINVAL);
    BAD(ps_global_updates_get_locked_updates(&out, NULL), PS_EINVAL);
    BAD(ps_global_updates_listen_to_new_active_update(NULL, NULL, on_update, NULL, NULL),
        PS_EINVAL);
    BAD(ps_global_updates_listen_to_new_locked_update(NULL, NULL, on_update, NULL, NULL),
        PS_EINVAL);
    BAD(ps_global_updates_lock_active_update(NULL, 1), PS_EINVAL);
    BAD(ps_global_updates_clear_locked_update(NULL, 1), PS_EINVAL);
    BAD(ps_global_updates_add_active_update(NULL, obj, NULL), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_add_active_update_new(NULL, kept(obj), NULL), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_change_active_update(NULL, 1, obj), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_change_active_update_new(NULL, 1, kept(obj)), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_clear_active_update(NULL, 1), PS_EINVAL);
    json_decref(obj);
    json_decref(v);
    json_decref(t);
}

/* ================================================================================== */
/* A live service: bad names, wrong types, wrong states, nothing stored changes       */

typedef struct fixture {
    count_backend *cb;
    ps_service *s;
    test_recorder rec;
    ps_profile_store *st;
    const char *name;
    ps_profile *p; /* loaded, active: key "k" */
    watch w;
    int writes;
} fixture;

static void fixture_open(fixture *f, const char *base)
{
    memset(f, 0, sizeof *f);
    f->s = counted_service(&f->cb, 1, "job-bad-input", &f->rec, 0);
    f->name = test_store_name(base);
    f->st = test_store(f->s, f->name);
    seed_key(f->s, f->st, "gift"); /* two Active updates, never loaded again */
    PS_ASSERT_OK(ps_store_load_profile(&f->p, f->st, "k", NULL, NULL));
    char *loaded = test_raw_get(g_url, f->name, "k");
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(f->p, "Tag", json_string("v")));
    PS_ASSERT_OK(ps_profile_save(f->p));
    free(wait_stored_change(f->s, f->name, "k", loaded)); /* legit writes are done */
    free(loaded);
    settle(f->s);
    f->w.store = f->name;
    f->w.keys[0] = "k";
    f->w.keys[1] = "gift";
    f->w.keys[2] = "never-created";
    watch_take(&f->w);
    f->writes = atomic_load(&f->cb->writes);
}

/* After the bad calls: no write reached the store, the bytes are the same. */
static void fixture_unchanged(fixture *f, const char *when)
{
    settle(f->s);
    PS_ASSERT_EQ(atomic_load(&f->cb->writes), f->writes);
    watch_same(&f->w, when);
    watch_take(&f->w);
}

static void fixture_close(fixture *f)
{
    if (f->p) {
        ps_profile_release(f->p);
        ps_profile_free(f->p);
    }
    ps_service_free(f->s);
    watch_free(&f->w); /* the release wrote */
}

/* GetProfileStore, LoadProfileAsync, ViewProfileAsync, GlobalUpdateProfileAsync with
 * every bad name, and templates of the wrong type. */
static void test_bad_names_and_types(void)
{
    fixture f;
    fixture_open(&f, "BadNames");
    json_t *t = test_template();
    ps_profile_store *st = (ps_profile_store *)&st;
    ps_profile *p = (ps_profile *)&p;
    ps_global_updates *gr = (ps_global_updates *)&gr;
    int done = 0;

    BAD(ps_service_get_profile_store(&st, f.s, NULL, t), PS_EINVAL);
    PS_ASSERT(st == NULL);
    for (size_t i = 0; i < N_BAD_NAMES; i++) {
        const char *n = bad_names[i];
        BAD(ps_service_get_profile_store(&st, f.s, n, t), PS_EINVAL);
        PS_ASSERT(st == NULL);
        BAD(ps_store_load_profile(&p, f.st, n, NULL, NULL), PS_EINVAL);
        PS_ASSERT(p == NULL);
        BAD(ps_store_load_profile_async(f.st, n, NULL, on_profile_done, &done),
            PS_EINVAL);
        BAD(ps_store_view_profile(&p, f.st, n), PS_EINVAL);
        PS_ASSERT(p == NULL);
        BAD(ps_store_view_profile_async(f.st, n, on_profile_done, &done), PS_EINVAL);
        BAD(ps_store_global_update_profile(&gr, f.st, n, add_gift, NULL), PS_EINVAL);
        PS_ASSERT(gr == NULL);
        BAD(ps_store_global_update_profile_async(f.st, n, add_gift, on_gu_done, &done),
            PS_EINVAL);
    }
    BAD(ps_store_load_profile(&p, f.st, NULL, NULL, NULL), PS_EINVAL);
    BAD(ps_store_load_profile(NULL, f.st, "k2", NULL, NULL), PS_EINVAL);
    BAD(ps_store_load_profile_async(f.st, NULL, NULL, on_profile_done, &done), PS_EINVAL);
    BAD(ps_store_load_profile_async(f.st, "k2", NULL, NULL, NULL), PS_EINVAL);
    BAD(ps_store_view_profile(&p, f.st, NULL), PS_EINVAL);
    BAD(ps_store_view_profile(NULL, f.st, "k"), PS_EINVAL);
    BAD(ps_store_view_profile_async(f.st, "k", NULL, NULL), PS_EINVAL);
    BAD(ps_store_global_update_profile(&gr, f.st, NULL, add_gift, NULL), PS_EINVAL);
    BAD(ps_store_global_update_profile(&gr, f.st, "k", NULL, NULL), PS_EINVAL);
    BAD(ps_store_global_update_profile_async(f.st, "k", NULL, on_gu_done, NULL),
        PS_EINVAL);
    BAD(ps_store_global_update_profile_async(f.st, "k", add_gift, NULL, NULL), PS_EINVAL);
    settle(f.s);
    PS_ASSERT_EQ(done, 0); /* a call that fails never calls back */

    /* Templates must be objects; borrowed (deep-copied), never stolen. */
    json_t *wrong[] = {json_array(),   json_string("t"), json_integer(3),
                       json_real(1.5), json_true(),      json_null()};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        size_t refs = wrong[i]->refcount;
        BAD(ps_service_get_profile_store(&st, f.s, "Other", wrong[i]), PS_EINVAL);
        PS_ASSERT(st == NULL);
        PS_ASSERT_EQ(wrong[i]->refcount, refs);
        json_decref(wrong[i]);
    }
    BAD(ps_service_get_profile_store(&st, f.s, "Other", NULL), PS_EINVAL);
    json_t *other = json_pack("{s:i}", "Different", 1);
    BAD(ps_service_get_profile_store(&st, f.s, f.name, other), PS_EINVAL);
    ASSERT_REFS(other, 1);
    json_decref(other);
    /* The same name and template gives the same store; the template is copied. */
    PS_ASSERT_OK(ps_service_get_profile_store(&st, f.s, f.name, t));
    PS_ASSERT(st == f.st);
    ASSERT_REFS(t, 1);
    /* The longest valid names work (positive controls for the 51-byte case). */
    PS_ASSERT_OK(ps_service_get_profile_store(&st, f.s, g_max, t));
    PS_ASSERT_STR_EQ(ps_store_name(st), g_max);
    PS_ASSERT_OK(ps_service_get_profile_store(&st, f.s, g_max_utf8, t));
    PS_ASSERT_OK(ps_store_view_profile(&p, f.st, g_max));
    PS_ASSERT(ps_profile_data(p) == NULL); /* never created */
    ps_profile_free(p);
    json_decref(t);

    /* A second load of the active key: PS_ELOCKED, and the profile stays ours. */
    BAD(ps_store_load_profile(&p, f.st, "k", NULL, NULL), PS_ELOCKED);
    PS_ASSERT(p == NULL);
    BAD(ps_store_load_profile_async(f.st, "k", NULL, on_profile_done, &done), PS_ELOCKED);
    PS_ASSERT(ps_profile_is_active(f.p));
    fixture_unchanged(&f, "bad names and types");
    PS_ASSERT_EQ(done, 0);
    fixture_close(&f);
}

/* Profile methods: bad meta tag names, NULL and wrong-typed values, steal/borrow. */
static void test_profile_bad_values(void)
{
    fixture f;
    fixture_open(&f, "BadValues");
    json_t *v = json_string("value");
    json_t *before_tags = json_deep_copy(ps_profile_meta_tags(f.p));
    json_t *before_data = json_deep_copy(ps_profile_data(f.p));

    BAD_NULL(ps_profile_get_meta_tag(f.p, NULL), PS_EINVAL);
    BAD_NULL(ps_profile_get_meta_tag(f.p, ""), PS_EINVAL);
    BAD_NULL(ps_profile_get_meta_tag(f.p, "\xff"), PS_EINVAL);
    BAD(ps_profile_set_meta_tag(f.p, NULL, v), PS_EINVAL);
    BAD(ps_profile_set_meta_tag(f.p, "", v), PS_EINVAL);
    BAD(ps_profile_set_meta_tag(f.p, "\xc0\x80", v), PS_EINVAL);
    BAD(ps_profile_set_meta_tag(f.p, "\xed\xa0\x80", v), PS_EINVAL);
    BAD(ps_profile_set_meta_tag(f.p, "Tag2", NULL), PS_EINVAL);
    ASSERT_REFS(v, 1);
    BAD(ps_profile_set_meta_tag_new(f.p, "", kept(v)), PS_EINVAL);
    BAD(ps_profile_set_meta_tag_new(f.p, "\xff", kept(v)), PS_EINVAL);
    BAD(ps_profile_set_meta_tag_new(f.p, "Tag2", NULL), PS_EINVAL);
    ASSERT_REFS(v, 1);
    PS_ASSERT(json_equal(ps_profile_meta_tags(f.p), before_tags));

    /* Data must stay an object: set_data_new refuses anything else, stealing it. */
    json_t *wrong[] = {json_array(), json_string("d"), json_integer(5),    json_real(2.5),
                       json_false(), json_null(),      json_pack("[i]", 1)};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        size_t refs = wrong[i]->refcount; /* true/false/null are never counted */
        BAD(ps_profile_set_data_new(f.p, kept(wrong[i])), PS_EINVAL);
        ASSERT_REFS(wrong[i], refs);
        BAD(ps_profile_set_meta_tags_new(f.p, kept(wrong[i])), PS_EINVAL);
        ASSERT_REFS(wrong[i], refs);
        json_decref(wrong[i]);
    }
    BAD(ps_profile_set_data_new(f.p, NULL), PS_EINVAL);
    BAD(ps_profile_set_meta_tags_new(f.p, NULL), PS_EINVAL);
    PS_ASSERT(json_equal(ps_profile_data(f.p), before_data));
    PS_ASSERT(json_equal(ps_profile_meta_tags(f.p), before_tags));
    BAD(ps_profile_listen_to_release(NULL, f.p, NULL, NULL, count_free_userdata),
        PS_EINVAL);

    /* A reference cycle in Data (jansson lets a child hold its parent): no JSON can
     * hold it, so Save should refuse it as bad data. */
    json_t *data = ps_profile_data(f.p), *child = json_object();
    PS_ASSERT(json_object_set_new(data, "Child", child) == 0);
    PS_ASSERT(json_object_set(child, "Back", data) == 0);
    stale();
    int rc = ps_profile_save(f.p);
    mismatch(rc == PS_EINVAL, "src/profile.c ps_profile_save",
             "Save of a Data holding a reference cycle returns %s (json_dumpb's 0 passes "
             "the size check); the worker then reports \"out of memory taking a save "
             "snapshot\" (src/profile.c save_prepare)",
             ps_status_name(rc));
    settle(f.s);
    json_object_del(child, "Back"); /* break the cycle: it would leak */
    json_object_del(data, "Child");
    fixture_unchanged(&f, "bad profile values");

    /* Positive controls: borrow takes a reference, steal takes the caller's. */
    PS_ASSERT_OK(ps_profile_set_meta_tag(f.p, "Borrowed", v));
    ASSERT_REFS(v, 2);
    json_t *s = kept(json_string("stolen"));
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(f.p, "Stolen", s));
    ASSERT_REFS(s, 2); /* ours + the profile's (the one we gave) */
    json_decref(s);
    PS_ASSERT(ps_profile_get_meta_tag(f.p, "Missing") == NULL);
    json_decref(v);
    json_decref(before_tags);
    json_decref(before_data);
    fixture_close(&f);
}

/* Global updates: handler-only methods outside a handler, owner-only methods on the
 * wrong objects, wrong ids, and a failing method inside a handler. */
typedef struct handler_case {
    int which;
    int rc;       /* what the method returned inside the handler */
    json_t *data; /* a value the method borrows or steals */
} handler_case;

static void bad_handler(ps_global_updates *gu, void *ud)
{
    handler_case *c = ud;
    stale();
    switch (c->which) {
    case 0:
        c->rc = ps_global_updates_add_active_update(gu, c->data, NULL);
        break;
    case 1:
        c->rc = ps_global_updates_add_active_update_new(gu, kept(c->data), NULL);
        break;
    case 2:
        c->rc = ps_global_updates_add_active_update(gu, NULL, NULL);
        break;
    case 3:
        c->rc = ps_global_updates_change_active_update(gu, 1, c->data);
        break;
    case 4:
        c->rc = ps_global_updates_change_active_update_new(gu, 1, kept(c->data));
        break;
    case 5:
        c->rc = ps_global_updates_change_active_update(gu, 999, c->data);
        break;
    case 6:
        c->rc = ps_global_updates_clear_active_update(gu, 999);
        break;
    case 7: /* owner-only methods on a handler's object */
        c->rc = ps_global_updates_lock_active_update(gu, 1);
        break;
    case 8:
        c->rc = ps_global_updates_clear_locked_update(gu, 1);
        break;
    case 9:
        c->rc = ps_global_updates_listen_to_new_active_update(NULL, gu, on_update, NULL,
                                                              NULL);
        break;
    case 10:
        c->rc = ps_global_updates_listen_to_new_locked_update(NULL, gu, on_update, NULL,
                                                              NULL);
        break;
    case 11: /* the update is Locked: change and clear refuse */
        c->rc = ps_global_updates_change_active_update(gu, 1, c->data);
        break;
    case 12:
        c->rc = ps_global_updates_clear_active_update(gu, 1);
        break;
    default:
        c->rc = PS_OK;
        break;
    }
}

static void expect_handler_fails(fixture *f, const char *key, int which, json_t *data,
                                 int want)
{
    handler_case c = {which, 0, data};
    ps_global_updates *gr = (ps_global_updates *)&gr;
    stale();
    int rc = ps_store_global_update_profile(&gr, f->st, key, bad_handler, &c);
    if (c.rc != want)
        PS_FAIL("handler case %d: the method returned %s, want %s", which,
                ps_status_name(c.rc), ps_status_name(want));
    /* "A failing method call inside it fails the whole call with that status". */
    check_error(rc, want, "global update call with a failing method", __LINE__);
    PS_ASSERT(gr == NULL);
}

/* Releases @p p and waits until the release save is in the store. */
static void release_and_wait(ps_service *s, const char *store, ps_profile *p)
{
    char *before = test_raw_get(g_url, store, ps_profile_key(p));
    PS_ASSERT_OK(ps_profile_release(p));
    free(wait_stored_change(s, store, ps_profile_key(p), before));
    free(before);
    settle(s);
}

static void lock_first_update(fixture *f)
{
    /* Load "gift", lock update 1 and save: it is Locked in the store afterwards. */
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, f->st, "gift", NULL, NULL));
    PS_ASSERT_OK(ps_global_updates_lock_active_update(ps_profile_global_updates(p), 1));
    release_and_wait(f->s, f->name, p);
    ps_profile_free(p);
}

static void test_global_updates_misuse(void)
{
    fixture f;
    fixture_open(&f, "BadGlobal");
    json_t *obj = json_pack("{s:i}", "Amount", 1);
    json_t *out = NULL;

    /* Handler-only methods outside a handler: on the profile's own object. */
    ps_global_updates *own = ps_profile_global_updates(f.p);
    PS_ASSERT(own != NULL);
    BAD(ps_global_updates_add_active_update(own, obj, NULL), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_add_active_update_new(own, kept(obj), NULL), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_change_active_update(own, 1, obj), PS_EINVAL);
    BAD(ps_global_updates_change_active_update_new(own, 1, kept(obj)), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    BAD(ps_global_updates_clear_active_update(own, 1), PS_EINVAL);
    /* Owner methods with a wrong id or state. */
    BAD(ps_global_updates_lock_active_update(own, 999), PS_ENOTFOUND);
    BAD(ps_global_updates_lock_active_update(own, -1), PS_ENOTFOUND);
    BAD(ps_global_updates_clear_locked_update(own, 999), PS_ENOTFOUND);
    BAD(ps_global_updates_listen_to_new_active_update(NULL, own, NULL, NULL, NULL),
        PS_EINVAL);
    BAD(ps_global_updates_listen_to_new_locked_update(NULL, own, NULL, NULL, NULL),
        PS_EINVAL);
    BAD(ps_global_updates_get_active_updates(NULL, own), PS_EINVAL);
    BAD(ps_global_updates_get_locked_updates(NULL, own), PS_EINVAL);
    ps_global_updates_free(own); /* a profile's own: ignored */
    PS_ASSERT(ps_profile_global_updates(f.p) == own);
    PS_ASSERT_OK(ps_global_updates_get_active_updates(&out, own));
    json_decref(out);

    /* A view's global updates (of a key another profile holds in the store): the
     * "foreign profile" of the matrix. Readable, never writable. */
    ps_profile *view = NULL;
    PS_ASSERT_OK(ps_store_view_profile(&view, f.st, "gift"));
    ps_global_updates *vg = ps_profile_global_updates(view);
    PS_ASSERT_OK(ps_global_updates_get_active_updates(&out, vg));
    PS_ASSERT_EQ(json_array_size(out), 2);
    json_decref(out);
    BAD(ps_global_updates_lock_active_update(vg, 1), PS_EVIEW);
    BAD(ps_global_updates_clear_locked_update(vg, 1), PS_EVIEW);
    BAD(ps_global_updates_listen_to_new_active_update(NULL, vg, on_update, NULL, NULL),
        PS_EVIEW);
    BAD(ps_global_updates_listen_to_new_locked_update(NULL, vg, on_update, NULL, NULL),
        PS_EVIEW);
    BAD(ps_global_updates_add_active_update(vg, obj, NULL), PS_EINVAL);
    BAD(ps_global_updates_change_active_update(vg, 1, obj), PS_EINVAL);
    BAD(ps_global_updates_clear_active_update(vg, 1), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    ps_global_updates_free(vg); /* ignored: owned by the view */
    ps_profile_free(view);

    /* A read-only result of a global update call. */
    ps_global_updates *res = NULL;
    PS_ASSERT_OK(ps_store_global_update_profile(&res, f.st, "other", add_gift, NULL));
    f.w.keys[3] = "other";
    free(f.w.bytes[3]);
    f.w.bytes[3] = test_raw_get(g_url, f.name, "other");
    f.writes = atomic_load(&f.cb->writes);
    BAD(ps_global_updates_lock_active_update(res, 1), PS_EVIEW);
    BAD(ps_global_updates_clear_locked_update(res, 1), PS_EVIEW);
    BAD(ps_global_updates_listen_to_new_active_update(NULL, res, on_update, NULL, NULL),
        PS_EVIEW);
    BAD(ps_global_updates_add_active_update_new(res, kept(obj), NULL), PS_EINVAL);
    ASSERT_REFS(obj, 1);
    ps_global_updates_free(res);
    fixture_unchanged(&f, "global updates outside a handler");

    /* Inside a handler: each failing method fails the call, nothing is written. */
    json_t *wrong[] = {json_integer(7), json_string("s"), json_true(), json_null()};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        size_t refs = wrong[i]->refcount; /* true/false/null are never counted */
        expect_handler_fails(&f, "gift", 0, wrong[i], PS_EINVAL);
        ASSERT_REFS(wrong[i], refs);
        expect_handler_fails(&f, "gift", 1, wrong[i], PS_EINVAL);
        ASSERT_REFS(wrong[i], refs);
        expect_handler_fails(&f, "gift", 3, wrong[i], PS_EINVAL);
        ASSERT_REFS(wrong[i], refs);
        expect_handler_fails(&f, "gift", 4, wrong[i], PS_EINVAL);
        ASSERT_REFS(wrong[i], refs);
        expect_handler_fails(&f, "never-created", 0, wrong[i], PS_EINVAL);
        json_decref(wrong[i]);
    }
    expect_handler_fails(&f, "gift", 2, NULL, PS_EINVAL);
    expect_handler_fails(&f, "gift", 5, obj, PS_ENOTFOUND);
    expect_handler_fails(&f, "gift", 6, NULL, PS_ENOTFOUND);
    expect_handler_fails(&f, "never-created", 6, NULL, PS_ENOTFOUND);
    expect_handler_fails(&f, "gift", 7, NULL, PS_EINVAL);
    expect_handler_fails(&f, "gift", 8, NULL, PS_EINVAL);
    expect_handler_fails(&f, "gift", 9, NULL, PS_EINVAL);
    expect_handler_fails(&f, "gift", 10, NULL, PS_EINVAL);
    ASSERT_REFS(obj, 1);
    fixture_unchanged(&f, "failing methods inside a handler");

    /* Locked updates: the owner cannot lock twice nor clear an Active one; handlers
     * cannot change or clear a Locked one. */
    lock_first_update(&f);
    watch_take(&f.w); /* the lock was a real write */
    f.writes = atomic_load(&f.cb->writes);
    expect_handler_fails(&f, "gift", 11, obj, PS_EINVAL);
    expect_handler_fails(&f, "gift", 12, NULL, PS_EINVAL);
    ps_profile *g = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&g, f.st, "gift", NULL, NULL));
    ps_global_updates *gg = ps_profile_global_updates(g);
    BAD(ps_global_updates_lock_active_update(gg, 1), PS_EINVAL);  /* Locked */
    BAD(ps_global_updates_clear_locked_update(gg, 2), PS_EINVAL); /* Active */
    PS_ASSERT_OK(ps_global_updates_lock_active_update(gg, 2));
    BAD(ps_global_updates_lock_active_update(gg, 2), PS_EINVAL); /* already */
    PS_ASSERT_OK(ps_global_updates_clear_locked_update(gg, 1));
    BAD(ps_global_updates_clear_locked_update(gg, 1), PS_EINVAL); /* already */
    release_and_wait(f.s, f.name, g);
    ps_profile_free(g);
    watch_take(&f.w);
    f.writes = atomic_load(&f.cb->writes);
    json_decref(obj);
    fixture_close(&f);
}

/* View profiles: every write method refuses with PS_EVIEW. */
static void test_view_profiles(void)
{
    fixture f;
    fixture_open(&f, "BadView");
    const char *keys[] = {"k", "gift", "never-created"};
    for (int i = 0; i < 3; i++) {
        ps_profile *v = NULL;
        PS_ASSERT_OK(ps_store_view_profile(&v, f.st, keys[i]));
        json_t *x = json_object();
        BAD(ps_profile_set_meta_tag(v, "Tag", x), PS_EVIEW);
        ASSERT_REFS(x, 1);
        BAD(ps_profile_set_meta_tag_new(v, "Tag", kept(x)), PS_EVIEW);
        ASSERT_REFS(x, 1);
        BAD(ps_profile_set_data_new(v, kept(x)), PS_EVIEW);
        ASSERT_REFS(x, 1);
        BAD(ps_profile_set_meta_tags_new(v, kept(x)), PS_EVIEW);
        ASSERT_REFS(x, 1);
        BAD(ps_profile_release(v), PS_EVIEW);
        BAD(ps_profile_save(v), PS_EVIEW);
        g_free_userdata_calls = 0;
        BAD(ps_profile_listen_to_release(NULL, v, on_release, NULL, count_free_userdata),
            PS_EVIEW);
        PS_ASSERT_EQ(g_free_userdata_calls, 0);
        PS_ASSERT_EQ(ps_profile_is_active(v), 0);
        if (i == 2) { /* never created: no Data, no MetaData */
            PS_ASSERT(ps_profile_data(v) == NULL && ps_profile_meta_data(v) == NULL);
            PS_ASSERT(ps_profile_meta_tags(v) == NULL);
            PS_ASSERT(ps_profile_get_meta_tag(v, "Tag") == NULL);
        } else {
            PS_ASSERT(json_is_object(ps_profile_data(v)));
        }
        json_decref(x);
        ps_profile_free(v);
    }
    fixture_unchanged(&f, "view profiles");
    fixture_close(&f);
}

/* After release: writes refuse with PS_ERELEASED; release and free stay harmless. */
static void test_after_release(void)
{
    fixture f;
    fixture_open(&f, "BadReleased");
    int released = 0;
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, f.p, on_release, &released, NULL));
    release_and_wait(f.s, f.name, f.p);
    PS_ASSERT_EQ(released, 1);
    watch_take(&f.w); /* the release save was a real write */
    f.writes = atomic_load(&f.cb->writes);

    json_t *x = json_object();
    BAD(ps_profile_save(f.p), PS_ERELEASED);
    BAD(ps_profile_set_meta_tag(f.p, "Tag", x), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    BAD(ps_profile_set_meta_tag_new(f.p, "Tag", kept(x)), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    BAD(ps_profile_set_data_new(f.p, kept(x)), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    BAD(ps_profile_set_meta_tags_new(f.p, kept(x)), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    ps_global_updates *gu = ps_profile_global_updates(f.p);
    BAD(ps_global_updates_lock_active_update(gu, 1), PS_ERELEASED);
    BAD(ps_global_updates_clear_locked_update(gu, 1), PS_ERELEASED);
    g_free_userdata_calls = 0;
    BAD(ps_global_updates_listen_to_new_active_update(NULL, gu, on_update, NULL,
                                                      count_free_userdata),
        PS_ERELEASED);
    BAD(ps_global_updates_listen_to_new_locked_update(NULL, gu, on_update, NULL,
                                                      count_free_userdata),
        PS_ERELEASED);
    PS_ASSERT_EQ(g_free_userdata_calls, 0); /* "no connection is made" */
    PS_ASSERT_OK(ps_profile_release(f.p));  /* "also when already released" */
    PS_ASSERT_EQ(released, 1);
    /* ListenToRelease on a released profile runs the listener at once. */
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, f.p, on_release, &released, NULL));
    PS_ASSERT_EQ(released, 2);
    PS_ASSERT(ps_profile_data(f.p) != NULL); /* still readable */
    PS_ASSERT_OK(ps_profile_set_before_save(f.p, NULL, NULL));
    json_decref(x);
    fixture_unchanged(&f, "after release");
    fixture_close(&f);
}

/* Release of a profile whose Data cannot be encoded (a reference cycle): the header
 * says the final save "is retried until it succeeds", so once the host breaks the
 * cycle the session must be released in the store. */
static void test_release_unencodable(void)
{
    fixture f;
    fixture_open(&f, "BadRelease");
    json_t *data = ps_profile_data(f.p), *child = json_object();
    PS_ASSERT(json_object_set_new(data, "Child", child) == 0);
    PS_ASSERT(json_object_set(child, "Back", data) == 0);
    int issues = f.rec.issues;
    PS_ASSERT_OK(ps_profile_release(f.p));
    settle(f.s);
    PS_ASSERT(f.rec.issues > issues); /* the failed save is reported */
    fixture_unchanged(&f, "release with a cycle in Data");
    json_object_del(child, "Back");
    for (int i = 0; i < 40; i++) { /* past load_repeat_delay, where retries happen */
        test_clock_advance(&g_clock, 1.0);
        PS_ASSERT_OK(ps_service_update(f.s));
        usleep(500);
    }
    json_t *doc = NULL, *as = NULL;
    for (int i = 0; i < 400; i++) { /* up to ~1 s for a retried save to land */
        PS_ASSERT_OK(ps_service_update(f.s));
        json_decref(doc);
        doc = test_stored_doc(g_url, f.name, "k");
        as = json_object_get(json_object_get(doc, "MetaData"), "ActiveSession");
        if (!as)
            break;
        usleep(2500);
    }
    mismatch(as == NULL, "src/profile.c save_prepare",
             "a release save that failed to take its snapshot is never retried: the "
             "store keeps ActiveSession after the Data was fixed (the header says the "
             "release save is retried until it succeeds)");
    json_decref(doc);
    watch_take(&f.w);
    fixture_close(&f);
}

/* Another server's profile: stolen from under us, our handle's writes refuse and
 * never reach the store (the fence), and its global updates are not ours. */
static void test_foreign_profile(void)
{
    fixture f;
    fixture_open(&f, "BadForeign");
    if (!test_url_shares_store(g_url)) {
        fixture_close(&f);
        printf("   (skipped: %s is not shared between services)\n", g_url);
        return;
    }
    test_recorder rec_b;
    ps_config cb;
    test_config(&cb, g_url, 2, "job-thief");
    ps_service *b = test_service_from(&cb, &rec_b);
    ps_profile_store *bst = test_store(b, f.name);
    ps_profile *mine = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&mine, bst, "k", steal_handler, NULL));
    /* Our next save finds the session gone: the profile is released locally. */
    char *stolen = test_raw_get(g_url, f.name, "k");
    json_object_set_new(ps_profile_data(f.p), "Coins", json_integer(666));
    PS_ASSERT_OK(ps_profile_save(f.p));
    for (int i = 0; i < 20000 && ps_profile_is_active(f.p); i++) {
        PS_ASSERT_OK(ps_service_update(f.s));
        usleep(500);
    }
    PS_ASSERT(!ps_profile_is_active(f.p));
    int64_t place = 0;
    const char *job = NULL;
    PS_ASSERT(ps_profile_active_session(f.p, &place, &job));
    PS_ASSERT(place == 2 && strcmp(job, "job-thief") == 0);
    char *now = test_raw_get(g_url, f.name, "k");
    PS_ASSERT_STR_EQ(now, stolen); /* the fence held */
    free(now);
    free(stolen);
    free(f.w.bytes[0]);
    f.w.bytes[0] = test_raw_get(g_url, f.name, "k");
    f.writes = atomic_load(&f.cb->writes);

    ps_global_updates *gu = ps_profile_global_updates(f.p);
    BAD(ps_global_updates_lock_active_update(gu, 1), PS_ERELEASED);
    BAD(ps_global_updates_clear_locked_update(gu, 1), PS_ERELEASED);
    BAD(ps_profile_save(f.p), PS_ERELEASED);
    BAD(ps_profile_set_meta_tag_new(f.p, "Tag", json_true()), PS_ERELEASED);
    /* The thief's service holds the key: a second load there is refused. */
    BAD(ps_store_load_profile_async(bst, "k", NULL, on_profile_done, NULL), PS_ELOCKED);
    fixture_unchanged(&f, "foreign profile");
    PS_ASSERT_OK(ps_profile_release(mine));
    ps_profile_free(mine);
    ps_service_free(b);
    watch_take(&f.w);
    fixture_close(&f);
}

/* Blocking calls and the tick inside listeners and handlers: PS_EINVAL. */
typedef struct inside {
    ps_service *s;
    ps_profile_store *st;
    int ran;
    int rc[8];
} inside;

static void call_blocking(inside *in)
{
    ps_profile *p = (ps_profile *)&p;
    ps_global_updates *r = (ps_global_updates *)&r;
    stale();
    in->rc[0] = ps_store_load_profile(&p, in->st, "inside", NULL, NULL);
    PS_ASSERT(p == NULL);
    check_error(in->rc[0], PS_EINVAL, "load inside a listener", __LINE__);
    p = (ps_profile *)&p;
    stale();
    in->rc[1] = ps_store_view_profile(&p, in->st, "k");
    PS_ASSERT(p == NULL);
    check_error(in->rc[1], PS_EINVAL, "view inside a listener", __LINE__);
    stale();
    in->rc[2] = ps_store_global_update_profile(&r, in->st, "k", add_gift, NULL);
    check_error(in->rc[2], PS_EINVAL, "global update inside a listener", __LINE__);
    stale();
    in->rc[3] = ps_service_update(in->s);
    check_error(in->rc[3], PS_EINVAL, "tick inside a listener", __LINE__);
    stale();
    in->rc[4] = ps_service_shutdown(in->s);
    check_error(in->rc[4], PS_EINVAL, "shutdown inside a listener", __LINE__);
    PS_ASSERT_EQ(ps_service_locked(in->s), 0);
    in->ran++;
}

static void inside_release(ps_profile *p, int64_t place, const char *job, void *ud)
{
    (void)p, (void)place, (void)job;
    call_blocking(ud);
}
static void inside_handler(ps_global_updates *gu, void *ud)
{
    (void)gu;
    call_blocking(ud);
}
static void inside_done(int status, ps_profile *p, void *ud)
{
    PS_ASSERT_OK(status);
    ps_profile_free(p);
    call_blocking(ud);
}
static ps_not_released_action inside_not_released(int64_t place, const char *job,
                                                  void *ud)
{
    (void)place, (void)job;
    call_blocking(ud);
    return PS_CANCEL;
}

static void test_blocking_inside_listeners(void)
{
    fixture f;
    fixture_open(&f, "BadInside");
    inside in = {f.s, f.st, 0, {0}};
    /* A not_released handler (the key is held by another session tag). */
    if (test_url_shares_store(g_url)) {
        ps_config c2;
        test_config(&c2, g_url, 7, "job-holder");
        ps_service *other = test_service_from(&c2, NULL);
        ps_profile *held = NULL;
        PS_ASSERT_OK(
            ps_store_load_profile(&held, test_store(other, f.name), "held", NULL, NULL));
        ps_profile *p = (ps_profile *)&p;
        BAD(ps_store_load_profile(&p, f.st, "held", inside_not_released, &in),
            PS_ECANCELLED);
        PS_ASSERT_EQ(in.ran, 1);
        PS_ASSERT_OK(ps_profile_release(held));
        ps_profile_free(held);
        ps_service_free(other);
        /* The load attempt itself rewrote "held" (a load always writes, as
         * ProfileService's UpdateAsync does); only the calls inside were bad. */
        f.writes = atomic_load(&f.cb->writes);
    }
    int before = in.ran;
    /* A global update handler. */
    PS_ASSERT_OK(ps_store_global_update_profile(NULL, f.st, "gift", inside_handler, &in));
    PS_ASSERT_EQ(in.ran, before + 1);
    /* A done callback of a non-blocking view. */
    PS_ASSERT_OK(ps_store_view_profile_async(f.st, "gift", inside_done, &in));
    for (int i = 0; i < 20000 && in.ran == before + 1; i++) {
        PS_ASSERT_OK(ps_service_update(f.s));
        usleep(250);
    }
    PS_ASSERT_EQ(in.ran, before + 2);
    fixture_unchanged(&f, "blocking calls inside listeners");
    /* A release listener (the release itself writes, once). */
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, f.p, inside_release, &in, NULL));
    PS_ASSERT_OK(ps_profile_release(f.p));
    PS_ASSERT_EQ(in.ran, before + 3);
    settle(f.s);
    watch_take(&f.w);
    fixture_close(&f);
}

/* After shutdown and after the service is freed. */
static void test_after_shutdown(void)
{
    fixture f;
    fixture_open(&f, "BadShutdown");
    ps_profile *view = NULL;
    PS_ASSERT_OK(ps_store_view_profile(&view, f.st, "gift"));
    PS_ASSERT_OK(ps_service_shutdown(f.s));
    PS_ASSERT(ps_service_locked(f.s));
    PS_ASSERT(!ps_profile_is_active(f.p)); /* released by shutdown */
    settle(f.s);
    watch_take(&f.w);
    f.writes = atomic_load(&f.cb->writes);

    json_t *t = test_template();
    ps_profile_store *st = (ps_profile_store *)&st;
    ps_profile *p = (ps_profile *)&p;
    ps_global_updates *gr = (ps_global_updates *)&gr;
    int done = 0;
    BAD(ps_service_get_profile_store(&st, f.s, "New", t), PS_ESHUTDOWN);
    PS_ASSERT(st == NULL);
    BAD(ps_service_get_profile_store(&st, f.s, f.name, t), PS_ESHUTDOWN);
    ASSERT_REFS(t, 1);
    BAD(ps_store_load_profile(&p, f.st, "k", NULL, NULL), PS_ESHUTDOWN);
    PS_ASSERT(p == NULL);
    BAD(ps_store_load_profile(&p, f.st, "new-key", NULL, NULL), PS_ESHUTDOWN);
    BAD(ps_store_load_profile_async(f.st, "k", NULL, on_profile_done, &done),
        PS_ESHUTDOWN);
    BAD(ps_store_view_profile(&p, f.st, "k"), PS_ESHUTDOWN);
    BAD(ps_store_view_profile_async(f.st, "k", on_profile_done, &done), PS_ESHUTDOWN);
    BAD(ps_store_global_update_profile(&gr, f.st, "gift", add_gift, NULL), PS_ESHUTDOWN);
    PS_ASSERT(gr == NULL);
    BAD(ps_store_global_update_profile_async(f.st, "gift", add_gift, on_gu_done, &done),
        PS_ESHUTDOWN);
    /* Bad names still say what is wrong with them. */
    BAD(ps_store_load_profile(&p, f.st, "", NULL, NULL), PS_EINVAL);
    json_t *x = json_object();
    BAD(ps_profile_save(f.p), PS_ERELEASED);
    BAD(ps_profile_set_data_new(f.p, kept(x)), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    BAD(ps_profile_set_meta_tag(f.p, "Tag", x), PS_ERELEASED);
    BAD(ps_global_updates_lock_active_update(ps_profile_global_updates(f.p), 1),
        PS_ERELEASED);
    PS_ASSERT_OK(ps_profile_release(f.p));
    BAD(ps_profile_save(view), PS_EVIEW);
    PS_ASSERT_OK(ps_service_shutdown(f.s)); /* twice: harmless */
    PS_ASSERT_OK(ps_service_update(f.s));
    PS_ASSERT_OK(ps_service_issue_signal_connect(NULL, f.s, on_issue, NULL, NULL));
    settle(f.s);
    PS_ASSERT_EQ(done, 0);
    fixture_unchanged(&f, "after shutdown");

    /* The service freed: the caller's handles stay readable and inert. */
    ps_profile *p_kept = f.p;
    f.p = NULL;
    ps_service_free(f.s);
    f.s = NULL;
    PS_ASSERT(json_is_object(ps_profile_data(p_kept)));
    PS_ASSERT(ps_profile_store_of(p_kept) == NULL);
    PS_ASSERT(!ps_profile_is_active(p_kept));
    BAD(ps_profile_save(p_kept), PS_ERELEASED);
    BAD(ps_profile_set_meta_tag(p_kept, "Tag", x), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    BAD(ps_profile_set_data_new(p_kept, kept(x)), PS_ERELEASED);
    ASSERT_REFS(x, 1);
    PS_ASSERT_OK(ps_profile_release(p_kept));
    ps_global_updates *gu = ps_profile_global_updates(p_kept);
    BAD(ps_global_updates_lock_active_update(gu, 1), PS_ERELEASED);
    BAD(ps_global_updates_listen_to_new_active_update(NULL, gu, on_update, NULL, NULL),
        PS_ERELEASED);
    json_t *out = NULL;
    PS_ASSERT_OK(ps_global_updates_get_active_updates(&out, gu));
    json_decref(out);
    PS_ASSERT(json_is_object(ps_profile_data(view)));
    ps_profile_free(p_kept);
    ps_profile_free(view);
    json_decref(x);
    json_decref(t);
    watch_same(&f.w, "after service free");
}

/* Connections: NULL listener, disconnect twice and from the listener itself. */
static ps_connection *g_self;
static int g_self_calls;
static void self_disconnect(int on, void *ud)
{
    (void)on, (void)ud;
    g_self_calls++;
    ps_connection_disconnect(g_self);
    ps_connection_disconnect(g_self);
}

static void test_connections(void)
{
    fixture f;
    fixture_open(&f, "BadConnections");
    ps_connection *c = (ps_connection *)&c;
    g_free_userdata_calls = 0;
    BAD(ps_service_issue_signal_connect(&c, f.s, NULL, NULL, count_free_userdata),
        PS_EINVAL);
    BAD(ps_service_corruption_signal_connect(&c, f.s, NULL, NULL, count_free_userdata),
        PS_EINVAL);
    BAD(ps_service_critical_state_signal_connect(&c, f.s, NULL, NULL,
                                                 count_free_userdata),
        PS_EINVAL);
    PS_ASSERT_EQ(g_free_userdata_calls, 0);
    PS_ASSERT_OK(
        ps_service_issue_signal_connect(&c, f.s, on_issue, NULL, count_free_userdata));
    ps_connection_disconnect(c);
    ps_connection_disconnect(c);
    PS_ASSERT_EQ(g_free_userdata_calls, 1); /* exactly once */
    PS_ASSERT_OK(ps_service_critical_state_signal_connect(&g_self, f.s, self_disconnect,
                                                          NULL, count_free_userdata));
    PS_ASSERT_EQ(g_self_calls, 0);
    fixture_unchanged(&f, "connections");
    fixture_close(&f);
    PS_ASSERT_EQ(g_free_userdata_calls, 2); /* the second at service free */
}

/* ================================================================================== */
/* Size limits (issue #8): refused, intact, active, and saved again once smaller.     */

static void grow(ps_profile *p, size_t bytes)
{
    char *blob = malloc(bytes + 1);
    PS_ASSERT(blob != NULL);
    memset(blob, 'x', bytes);
    blob[bytes] = '\0';
    PS_ASSERT(json_object_set_new(ps_profile_data(p), "Blob", json_string(blob)) == 0);
    free(blob);
}

static void test_size_limit(void)
{
    enum { LIMIT = 4096 };
    count_backend *cb = NULL;
    test_recorder rec;
    ps_service *s = counted_service(&cb, 1, "job-size", &rec, LIMIT);
    const char *name = test_store_name("SizeLimit");
    ps_profile_store *st = test_store(s, name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, st, "big", NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(1));
    PS_ASSERT_OK(ps_profile_save(p));
    char *before = wait_stored_change(s, name, "big", NULL);
    while (strstr(before, "\"Coins\":1") == NULL) {
        char *next = wait_stored_change(s, name, "big", before);
        free(before);
        before = next;
    }
    int writes = atomic_load(&cb->writes);

    /* 1. Data alone over the limit: Save refuses at once, nothing is queued. */
    grow(p, LIMIT + 100);
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(2));
    BAD(ps_profile_save(p), PS_ETOOBIG);
    PS_ASSERT(strstr(ps_error_last()->message, "4096") != NULL);
    settle(s);
    PS_ASSERT_EQ(atomic_load(&cb->writes), writes);

    /* 2. The auto-save of that profile fails into IssueSignal with a clear text. */
    int issues = rec.issues;
    for (int i = 0; i < 20000 && rec.issues == issues; i++) {
        if (i < 45) /* past the 30 s auto-save period, then wait for the worker */
            test_clock_advance(&g_clock, 1.0);
        PS_ASSERT_OK(ps_service_update(s));
        usleep(500);
    }
    PS_ASSERT(rec.issues > issues);
    if (!strstr(rec.last_issue, "size limit") || !strstr(rec.last_issue, "4096"))
        PS_FAIL("unclear IssueSignal for an over-limit save: \"%s\"", rec.last_issue);
    settle(s);
    PS_ASSERT_EQ(atomic_load(&cb->writes), writes);
    char *now = test_raw_get(g_url, name, "big");
    PS_ASSERT_STR_EQ(now, before); /* the stored version is intact */
    free(now);
    PS_ASSERT(ps_profile_is_active(p));

    /* 3. Data under the limit but the document over it (meta tags): Save queues,
     *    the worker refuses, IssueSignal says why, nothing is written. */
    grow(p, LIMIT - 400);
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(p, "Note", json_pack("s", "..........")));
    char tag[600];
    memset(tag, 't', sizeof tag - 1);
    tag[sizeof tag - 1] = '\0';
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(p, "Big", json_string(tag)));
    issues = rec.issues;
    PS_ASSERT_OK(ps_profile_save(p));
    for (int i = 0; i < 20000 && rec.issues == issues; i++) {
        PS_ASSERT_OK(ps_service_update(s));
        usleep(250);
    }
    PS_ASSERT(rec.issues > issues);
    PS_ASSERT(strstr(rec.last_issue, "size limit") != NULL);
    now = test_raw_get(g_url, name, "big");
    PS_ASSERT_STR_EQ(now, before);
    free(now);
    PS_ASSERT(ps_profile_is_active(p));
    PS_ASSERT_EQ(atomic_load(&cb->writes), writes);

    /* 4. Shrunk again: the next save goes through, with the changes made since. */
    json_object_del(ps_profile_data(p), "Blob");
    PS_ASSERT_OK(ps_profile_set_meta_tag_new(p, "Big", json_true()));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(3));
    PS_ASSERT_OK(ps_profile_save(p));
    now = wait_stored_change(s, name, "big", before);
    json_t *doc = json_loads(now, 0, NULL);
    PS_ASSERT(doc != NULL);
    PS_ASSERT_EQ(
        json_integer_value(json_object_get(json_object_get(doc, "Data"), "Coins")), 3);
    PS_ASSERT(json_object_get(json_object_get(doc, "Data"), "Blob") == NULL);
    PS_ASSERT(strlen(now) <= LIMIT);
    json_decref(doc);
    free(now);
    PS_ASSERT(ps_profile_is_active(p));
    PS_ASSERT_EQ(rec.critical_on, 0);

    /* 5. A global update that would take the document over the limit: PS_ETOOBIG,
     *    nothing written, the owner still active. */
    char *mid = test_raw_get(g_url, name, "big");
    writes = atomic_load(&cb->writes);
    handler_case c = {0, 0, NULL};
    json_t *huge = json_object();
    char val[LIMIT];
    memset(val, 'g', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    json_object_set_new(huge, "Gift", json_string(val));
    c.data = huge;
    BAD(ps_store_global_update_profile(NULL, st, "big", bad_handler, &c), PS_ETOOBIG);
    PS_ASSERT_OK(c.rc);
    ASSERT_REFS(huge, 1); /* borrowed: the handler's add took a copy */
    json_decref(huge);
    now = test_raw_get(g_url, name, "big");
    PS_ASSERT_STR_EQ(now, mid);
    free(now);
    free(mid);
    PS_ASSERT_EQ(atomic_load(&cb->writes), writes);
    PS_ASSERT(ps_profile_is_active(p));

    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(s);
    free(before);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    init_names();
    PS_RUN(test_errors_and_names);
    PS_RUN(test_backend_api);
    PS_RUN(test_service_new);
    PS_RUN(test_null_objects);
    PS_RUN(test_bad_names_and_types);
    PS_RUN(test_profile_bad_values);
    PS_RUN(test_global_updates_misuse);
    PS_RUN(test_view_profiles);
    PS_RUN(test_after_release);
    PS_RUN(test_release_unencodable);
    PS_RUN(test_foreign_profile);
    PS_RUN(test_blocking_inside_listeners);
    PS_RUN(test_after_shutdown);
    PS_RUN(test_connections);
    PS_RUN(test_size_limit);
    printf("ok: %d bad calls checked, %d header/code mismatches reported\n", g_checks,
           g_mismatches);
    return 0;
}
