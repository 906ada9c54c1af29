/*
 * faulty.c — "faulty:OPTIONS:INNER-URL", the fault-injecting shim for reliability
 * tests. Like SQLite's ext/misc/vfstrace.c over its root VFS, it opens the inner
 * backend, forwards every member to it, and on a seeded schedule does to its caller
 * what real stores do:
 *
 *   error       the call fails before it reaches the store: PS_EBACKEND "injected
 *               fault". Nothing happened.
 *   lost_reply  an update commits, then its reply is lost: PS_EBACKEND "injected
 *               lost reply". The caller cannot tell this from an error and retries
 *               a write that already happened, so every write the library makes must
 *               be safe to repeat (tests/test_faults.c proves it).
 *   conflict    the transform runs on the current value and its result is dropped,
 *               as when a compare-and-set loses a race; then the real update runs,
 *               which runs the transform again.
 *   latency_ms  a random sleep of 0..N ms before each call.
 *   reads=0     only writes (update, remove) fail: for runs whose checker reads the
 *               store through the same URL.
 *
 * Grammar (also documented at ps_backend_open in backend.h):
 *   URL     = "faulty:" OPTIONS ":" INNER-URL
 *   OPTIONS = "" | OPTION *("," OPTION)
 *   OPTION  = "seed=" UINT | "error=" P | "lost_reply=" P | "conflict=" P
 *           | "latency_ms=" UINT | "limit=" UINT | "reads=" ("0" | "1")
 *                                                           (P: a number in 0..1)
 * OPTIONS never contain ':', so the first ':' ends them and INNER-URL may be any URL:
 * postgres://user:pw@host/db, or another faulty:. Messages quote only OPTIONS, never
 * the inner URL (it may hold a password).
 *
 * The schedule is one xorshift64* generator per handle behind a mutex. Each call
 * draws four numbers whatever happens, so the faults a sequence of calls meets depend
 * only on the seed and the order of the calls. Calls with bad arguments are forwarded
 * untouched: the inner backend's PS_EINVAL is part of the contract being tested.
 */
#include "backends.h"

#include "error.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct settings {
    double error, lost_reply, conflict; /* probabilities */
    unsigned long long latency_ms;
    unsigned long long limit; /* 0: unlimited */
    unsigned long long seed;
    int reads;           /* 0: reads (get, list, …) never fail */
    int reseed, relimit; /* set by a parse that named seed= / limit= */
} settings;

typedef struct faulty_backend {
    ps_backend parent;
    ps_backend *inner;
    pthread_mutex_t lock; /* guards everything below */
    settings set;
    uint64_t state;              /* xorshift64* */
    unsigned long long injected; /* faults drawn, toward set.limit */
    ps_faulty_stats stats;
} faulty_backend;

/* Every handle's counters added up, freed handles included (profilesim reports it). */
static pthread_mutex_t totals_lock = PTHREAD_MUTEX_INITIALIZER;
static ps_faulty_stats totals;

/* What one call will suffer, drawn before it starts. */
typedef struct plan {
    int fail, conflict, lose;
    long sleep_us;
} plan;

/* ---- options --------------------------------------------------------------------- */

static int parse_uint(unsigned long long *out, const char *v, unsigned long long max)
{
    if (!*v || strspn(v, "0123456789") != strlen(v))
        return -1;
    errno = 0;
    unsigned long long n = strtoull(v, NULL, 10);
    if (errno || n > max)
        return -1;
    *out = n;
    return 0;
}

static int parse_probability(double *out, const char *v)
{
    char *end = NULL;
    errno = 0;
    double p = strtod(v, &end);
    if (!*v || *end || errno || !(p >= 0 && p <= 1)) /* NaN fails the last test */
        return -1;
    *out = p;
    return 0;
}

/* One "name=value" item into @p set. @return 0, or -1 when it is not one we know. */
static int parse_item(settings *set, char *item)
{
    char *eq = strchr(item, '=');
    if (!eq)
        return -1;
    *eq = '\0';
    const char *v = eq + 1;
    if (strcmp(item, "seed") == 0) {
        set->reseed = 1;
        return parse_uint(&set->seed, v, ~0ull);
    }
    if (strcmp(item, "limit") == 0) {
        set->relimit = 1;
        return parse_uint(&set->limit, v, ~0ull);
    }
    if (strcmp(item, "latency_ms") == 0)
        return parse_uint(&set->latency_ms, v, 60000);
    if (strcmp(item, "error") == 0)
        return parse_probability(&set->error, v);
    if (strcmp(item, "lost_reply") == 0)
        return parse_probability(&set->lost_reply, v);
    if (strcmp(item, "conflict") == 0)
        return parse_probability(&set->conflict, v);
    if (strcmp(item, "reads") == 0 && (strcmp(v, "0") == 0 || strcmp(v, "1") == 0)) {
        set->reads = *v == '1';
        return 0;
    }
    return -1;
}

/* Applies the comma-separated OPTIONS (@p len bytes of @p s) to @p set, all or none. */
static int parse_options(settings *set, const char *s, size_t len)
{
    settings next = *set;
    next.reseed = next.relimit = 0;
    for (size_t i = 0; i < len;) {
        size_t n = 0;
        while (i + n < len && s[i + n] != ',')
            n++;
        char item[64];
        int ok = n > 0 && n < sizeof item;
        if (ok) {
            memcpy(item, s + i, n);
            item[n] = '\0';
            ok = parse_item(&next, item) == 0;
        }
        if (!ok)
            return ps__error_set(PS_EINVAL,
                                 "faulty: bad option \"%.*s\" (want seed=N, "
                                 "error=P, lost_reply=P, conflict=P, latency_ms=N, "
                                 "limit=N or reads=0|1, P in 0..1)",
                                 (int)(n > 40 ? 40 : n), s + i);
        i += n + 1;
    }
    *set = next;
    return PS_OK;
}

/* ---- the schedule ------------------------------------------------------------------ */

/* splitmix64 of the seed: nearby seeds give unrelated streams; never 0. */
static uint64_t seed_state(unsigned long long seed)
{
    uint64_t z = (uint64_t)seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

/* Under the lock: a uniform number in [0, 1). */
static double next_unit(faulty_backend *f)
{
    uint64_t x = f->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->state = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

/* Under the lock: nonzero when a fault with probability @p p happens (within limit). */
static int happens(faulty_backend *f, double unit, double p)
{
    if (!(unit < p) || (f->set.limit && f->injected >= f->set.limit))
        return 0;
    f->injected++;
    return 1;
}

static void count(unsigned long long *mine, unsigned long long *total)
{
    (*mine)++;
    pthread_mutex_lock(&totals_lock);
    (*total)++;
    pthread_mutex_unlock(&totals_lock);
}

enum { CALL_READ, CALL_UPDATE, CALL_REMOVE };

/* Draws one call's faults. Only updates can conflict or lose their reply; reads fail
 * only while reads=1. */
static plan draw(faulty_backend *f, int call)
{
    plan p = {0, 0, 0, 0};
    pthread_mutex_lock(&f->lock);
    double u_error = next_unit(f), u_conflict = next_unit(f), u_lost = next_unit(f),
           u_sleep = next_unit(f);
    count(&f->stats.calls, &totals.calls);
    if (f->set.latency_ms)
        p.sleep_us = (long)(u_sleep * (double)(f->set.latency_ms * 1000 + 1));
    p.fail = (call != CALL_READ || f->set.reads) && happens(f, u_error, f->set.error);
    if (p.fail)
        count(&f->stats.errors, &totals.errors);
    if (!p.fail && call == CALL_UPDATE) {
        p.conflict = happens(f, u_conflict, f->set.conflict);
        p.lose = happens(f, u_lost, f->set.lost_reply);
    }
    if (p.conflict)
        count(&f->stats.conflicts, &totals.conflicts);
    if (p.sleep_us > 0)
        count(&f->stats.delays, &totals.delays);
    pthread_mutex_unlock(&f->lock);
    return p;
}

static void pause_for(const plan *p)
{
    struct timespec ts = {p->sleep_us / 1000000, (p->sleep_us % 1000000) * 1000};
    while (p->sleep_us > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static int fault(const char *member, const char *store, const char *key)
{
    return ps__error_set(PS_EBACKEND, "injected fault: %s %s/%s", member,
                         store ? store : "*", key ? key : "*");
}

/* ---- members ----------------------------------------------------------------------- */

static int faulty_get(ps_bytes *out, ps_backend *b, const char *store, const char *key)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return ps__error_set(PS_EINVAL, "get: backend is NULL");
    if (out && ps__backend_check_key("get", store, key) == PS_OK) {
        plan p = draw(f, CALL_READ);
        pause_for(&p);
        if (p.fail) {
            out->data = NULL, out->len = 0;
            return fault("get", store, key);
        }
    }
    return f->inner->get(out, f->inner, store, key);
}

/* A spurious conflict: the transform sees the current value, and what it computed is
 * thrown away, exactly as when the compare-and-set after it loses. A failing
 * transform ends the update there, as the inner backend would end it. */
static int run_and_drop(faulty_backend *f, const char *store, const char *key,
                        ps_transform_fn transform, void *userdata)
{
    ps_bytes current = {NULL, 0};
    int rc = f->inner->get(&current, f->inner, store, key);
    if (rc != PS_OK && rc != PS_ENOTFOUND)
        return rc;
    ps_write w;
    memset(&w, 0, sizeof w);
    rc = transform(&w, rc == PS_OK ? &current : NULL, userdata);
    ps_bytes_dispose(&w.doc);
    ps_bytes_dispose(&current);
    if (rc > 0)
        return ps__error_set(PS_EINVAL,
                             "update %s/%s: transform returned %d, not a "
                             "ps_status",
                             store, key, rc);
    return rc;
}

static int faulty_update(ps_backend *b, const char *store, const char *key,
                         ps_transform_fn transform, void *userdata)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return ps__error_set(PS_EINVAL, "update: backend is NULL");
    if (!transform || ps__backend_check_key("update", store, key) != PS_OK)
        return f->inner->update(f->inner, store, key, transform, userdata);
    plan p = draw(f, CALL_UPDATE);
    pause_for(&p);
    if (p.fail)
        return fault("update", store, key);
    int rc = p.conflict ? run_and_drop(f, store, key, transform, userdata) : PS_OK;
    if (rc == PS_OK)
        rc = f->inner->update(f->inner, store, key, transform, userdata);
    if (rc == PS_OK && p.lose) {
        pthread_mutex_lock(&f->lock);
        count(&f->stats.lost_replies, &totals.lost_replies);
        pthread_mutex_unlock(&f->lock);
        return ps__error_set(PS_EBACKEND,
                             "injected lost reply: update %s/%s (it was "
                             "written)",
                             store, key);
    }
    return rc;
}

static int faulty_list(ps_backend *b, const char *store, const char *prefix, ps_key_fn fn,
                       void *userdata)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return ps__error_set(PS_EINVAL, "list: backend is NULL");
    if (store && *store && fn) {
        plan p = draw(f, CALL_READ);
        pause_for(&p);
        if (p.fail)
            return fault("list", store, NULL);
    }
    return f->inner->list(f->inner, store, prefix, fn, userdata);
}

static int faulty_remove(ps_backend *b, const char *store, const char *key)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return ps__error_set(PS_EINVAL, "remove: backend is NULL");
    if (ps__backend_check_key("remove", store, key) == PS_OK) {
        plan p = draw(f, CALL_REMOVE);
        pause_for(&p);
        if (p.fail)
            return fault("remove", store, key);
    }
    return f->inner->remove(f->inner, store, key);
}

static int faulty_quarantine_list(ps_backend *b, const char *store, const char *key,
                                  ps_quarantine_fn fn, void *userdata)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return ps__error_set(PS_EINVAL, "quarantine list: backend is NULL");
    if (fn) {
        plan p = draw(f, CALL_READ);
        pause_for(&p);
        if (p.fail)
            return fault("quarantine list", store, key);
    }
    return f->inner->quarantine_list(f->inner, store, key, fn, userdata);
}

static int faulty_server_time(double *out, ps_backend *b)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return ps__error_set(PS_EINVAL, "server time: backend is NULL");
    if (out) {
        plan p = draw(f, CALL_READ);
        pause_for(&p);
        if (p.fail)
            return fault("server time", NULL, NULL);
    }
    return f->inner->server_time(out, f->inner);
}

static void faulty_free(ps_backend *b)
{
    faulty_backend *f = (faulty_backend *)b;
    if (!f)
        return;
    ps_backend_free(f->inner);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* ---- open, and the private API for tests and profilesim --------------------------- */

/* The shim mirrors the inner backend: same version, an optional member only where the
 * inner one has it (a version-1 inner backend has no server_time to read). */
static void mirror_members(faulty_backend *f)
{
    ps_backend *in = f->inner;
    f->parent.version = in->version;
    f->parent.get = faulty_get;
    f->parent.update = faulty_update;
    f->parent.free = faulty_free;
    f->parent.list = in->list ? faulty_list : NULL;
    f->parent.remove = in->remove ? faulty_remove : NULL;
    f->parent.quarantine_list = in->quarantine_list ? faulty_quarantine_list : NULL;
    if (in->version >= 2 && in->server_time)
        f->parent.server_time = faulty_server_time;
}

int ps__faulty_backend_open(ps_backend **out, const char *spec)
{
    const char *colon = strchr(spec, ':');
    if (!colon)
        return ps__error_set(PS_EINVAL, "faulty: store url has no inner url (want "
                                        "faulty:OPTIONS:INNER-URL)");
    settings set = {.seed = 1, .reads = 1};
    int rc = parse_options(&set, spec, (size_t)(colon - spec));
    if (rc != PS_OK)
        return rc;
    faulty_backend *f = calloc(1, sizeof *f);
    if (!f)
        return ps__error_oom();
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        return ps__error_set(PS_EBACKEND, "faulty: cannot create a mutex");
    }
    rc = ps_backend_open(&f->inner, colon + 1);
    if (rc != PS_OK) {
        pthread_mutex_destroy(&f->lock);
        free(f);
        return rc;
    }
    f->set = set;
    f->state = seed_state(set.seed);
    mirror_members(f);
    *out = &f->parent;
    return PS_OK;
}

static faulty_backend *as_faulty(ps_backend *b)
{
    if (!b || b->free != faulty_free) {
        ps__error_set(PS_EINVAL, "not a faulty: backend");
        return NULL;
    }
    return (faulty_backend *)b;
}

int ps__faulty_stats(ps_faulty_stats *out, ps_backend *backend)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "faulty stats: out is NULL");
    if (!backend) {
        pthread_mutex_lock(&totals_lock);
        *out = totals;
        pthread_mutex_unlock(&totals_lock);
        return PS_OK;
    }
    faulty_backend *f = as_faulty(backend);
    if (!f)
        return PS_EINVAL;
    pthread_mutex_lock(&f->lock);
    *out = f->stats;
    pthread_mutex_unlock(&f->lock);
    return PS_OK;
}

int ps__faulty_configure(ps_backend *backend, const char *options)
{
    faulty_backend *f = as_faulty(backend);
    if (!f)
        return PS_EINVAL;
    if (!options)
        return ps__error_set(PS_EINVAL, "faulty configure: options is NULL");
    pthread_mutex_lock(&f->lock);
    int rc = parse_options(&f->set, options, strlen(options));
    if (rc == PS_OK && f->set.reseed)
        f->state = seed_state(f->set.seed);
    if (rc == PS_OK && f->set.relimit)
        f->injected = 0;
    pthread_mutex_unlock(&f->lock);
    return rc;
}
