/*
 * backend.c — the vtable plumbing: byte strings, version checks, opening a backend
 * from a URL, and the compare-and-set loop that every implementation's update uses
 * (so the retry, transform and ownership rules are written once).
 */
#include "backends.h"

#include "error.h"

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ps_bytes_dispose(ps_bytes *bytes)
{
    if (!bytes)
        return;
    free(bytes->data);
    bytes->data = NULL;
    bytes->len = 0;
}

/* @p out is overwritten, not freed: it is usually a zeroed struct. On failure it is
 * left as it was. @p data may be NULL only when @p len is 0 (an empty value). */
int ps_bytes_set(ps_bytes *out, const char *data, size_t len)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "bytes: out is NULL");
    if (!data && len > 0)
        return ps__error_set(PS_EINVAL, "bytes: data is NULL with length %zu", len);
    if (len == SIZE_MAX)
        return ps__error_oom();
    char *copy = malloc(len + 1);
    if (!copy)
        return ps__error_oom();
    if (len > 0)
        memcpy(copy, data, len);
    copy[len] = '\0';
    out->data = copy;
    out->len = len;
    return PS_OK;
}

int ps_backend_init(ps_backend *backend, unsigned int version)
{
    if (!backend)
        return ps__error_set(PS_EINVAL, "backend init: backend is NULL");
    if (version < 1 || version > PS_BACKEND_VERSION)
        return ps__error_set(PS_EINVAL, "backend version %u is not supported (1..%d)",
                             version, PS_BACKEND_VERSION);
    memset(backend, 0, sizeof *backend);
    backend->version = version;
    return PS_OK;
}

/* Like libgit2's git_error__check_version: a backend built against a newer header
 * than ours has members we do not know, and an older one than 1 does not exist. */
int ps_backend_check(const ps_backend *backend)
{
    if (!backend)
        return ps__error_set(PS_EINVAL, "backend is NULL");
    if (backend->version < 1 || backend->version > PS_BACKEND_VERSION)
        return ps__error_set(PS_EINVAL, "backend version %u is not supported (1..%d)",
                             backend->version, PS_BACKEND_VERSION);
    if (!backend->get)
        return ps__error_set(PS_EINVAL, "backend has no get member");
    if (!backend->update)
        return ps__error_set(PS_EINVAL, "backend has no update member");
    if (!backend->free)
        return ps__error_set(PS_EINVAL, "backend has no free member");
    return PS_OK;
}

void ps_backend_free(ps_backend *backend)
{
    if (backend && backend->free)
        backend->free(backend);
}

/* The error names the scheme only: a URL may carry a password (postgres://u:pw@h),
 * and messages end up in logs and IssueSignal listeners. */
static int unknown_scheme(const char *url)
{
    size_t n = 0;
    while (n < 32 && url[n] && url[n] != ':' &&
           (strchr("+-.", url[n]) || (url[n] >= 'a' && url[n] <= 'z') ||
            (url[n] >= 'A' && url[n] <= 'Z') || (url[n] >= '0' && url[n] <= '9')))
        n++;
    if (n == 0 || url[n] != ':')
        return ps__error_set(PS_EINVAL, "store url has no scheme (want memory:, "
                                        "sqlite:PATH or postgres://...)");
    return ps__error_set(PS_EINVAL, "unknown store url scheme \"%.*s:\"", (int)n, url);
}

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int ps_backend_open(ps_backend **out, const char *url)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "backend open: out is NULL");
    *out = NULL;
    if (!url || !*url)
        return ps__error_set(PS_EINVAL, "store url is empty");
    if (has_prefix(url, "memory:"))
        return ps__memory_backend_open(out, url + strlen("memory:"));
    if (has_prefix(url, "sqlite:")) {
        const char *path = url + strlen("sqlite:");
        if (!*path)
            return ps__error_set(PS_EINVAL, "sqlite: store url has an empty path");
        return ps__sqlite_backend_open(out, path);
    }
    /* ---- postgres: src/backend/postgres.c (libpq takes the whole URL) ---------- */
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        return ps__postgres_backend_open(out, url);
    /* ---- faulty:OPTIONS:INNER-URL: src/backend/faulty.c (a shim over any URL) -- */
    if (has_prefix(url, "faulty:"))
        return ps__faulty_backend_open(out, url + strlen("faulty:"));
    return unknown_scheme(url);
}

int ps__backend_check_key(const char *what, const char *store, const char *key)
{
    if (!store)
        return ps__error_set(PS_EINVAL, "%s: store name is NULL", what);
    if (!*store)
        return ps__error_set(PS_EINVAL, "%s: store name is empty", what);
    if (!key)
        return ps__error_set(PS_EINVAL, "%s: key is NULL", what);
    if (!*key)
        return ps__error_set(PS_EINVAL, "%s: key is empty", what);
    return PS_OK;
}

double ps__backend_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* After a lost compare-and-set. The first retries go straight back (the winner has
 * committed already); past that, random sleeps growing to ~3 ms break up contenders
 * that keep colliding in lock step, as in Ethernet's backoff. */
static void conflict_backoff(int attempt)
{
    static _Thread_local unsigned int seed;
    if (attempt < 3) {
        sched_yield();
        return;
    }
    if (seed == 0)
        seed = (unsigned int)(uintptr_t)&seed ^ (unsigned int)time(NULL) ^ 1u;
    int shift = attempt - 3 > 6 ? 6 : attempt - 3;
    long max_us = 50L << shift;
    struct timespec ts = {0, (long)(rand_r(&seed) % max_us) * 1000L};
    nanosleep(&ts, NULL);
}

/* One attempt's transform: zeroed output, the reason always NUL-terminated, and any
 * bytes a failing transform allocated are freed here (it must never be written). */
static int run_transform(ps_write *w, ps_transform_fn transform, const ps_bytes *current,
                         void *userdata, const char *store, const char *key)
{
    memset(w, 0, sizeof *w);
    int rc = transform(w, current, userdata);
    w->reason[sizeof w->reason - 1] = '\0';
    if (rc == PS_OK)
        return PS_OK;
    ps_bytes_dispose(&w->doc);
    if (rc > 0)
        return ps__error_set(PS_EINVAL, "update %s/%s: transform returned %d, "
                                        "not a ps_status", store, key, rc);
    return rc; /* its own message stands: we do not reword it */
}

int ps__backend_cas(const ps__cas_ops *ops, void *ctx, const char *store,
                    const char *key, ps_transform_fn transform, void *userdata)
{
    for (int attempt = 0; attempt < PS__UPDATE_MAX_ATTEMPTS; attempt++) {
        ps_bytes current = {NULL, 0};
        ps_write w;
        int present = 0;
        int64_t version = 0;
        int rc = ops->read(ctx, &current, &present, &version);
        if (rc == PS_OK)
            rc = run_transform(&w, transform, present ? &current : NULL, userdata,
                               store, key);
        else
            memset(&w, 0, sizeof w);
        if (rc == PS_OK && w.doc.data)
            rc = ops->write(ctx, &w, &current, present, version);
        ps_bytes_dispose(&w.doc);
        ps_bytes_dispose(&current);
        if (rc != PS__CAS_RETRY)
            return rc;
        conflict_backoff(attempt);
    }
    return ps__error_set(PS_ECONFLICT, "update %s/%s: gave up after %d conflicting "
                                       "attempts", store, key, PS__UPDATE_MAX_ATTEMPTS);
}
