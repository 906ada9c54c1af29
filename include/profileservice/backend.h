/*
 * profileservice/backend.h — what a backend author needs: the storage vtable.
 *
 * A backend stores one byte string (a JSON document) per (store name, key) with a
 * version, and offers Roblox's UpdateAsync contract: read the latest value, let a
 * transform compute the new one, compare-and-set on the version, retry on conflict.
 * Implementations: memory:, sqlite:PATH, postgres://…, and the faulty: shim.
 *
 * Threads: every member may be called from several worker threads at once; a backend
 * must be thread-safe. Members never call back into the service.
 */
#ifndef PROFILESERVICE_BACKEND_H
#define PROFILESERVICE_BACKEND_H

#include "../profileservice.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A byte string. @c data is malloc'd, NUL-terminated (not counted in @c len). */
typedef struct ps_bytes {
    char *data;
    size_t len;
} ps_bytes;

/** Frees @c data and zeroes the struct. NULL is accepted. Thread-safe. */
PS_EXTERN void ps_bytes_dispose(ps_bytes *bytes);

/** Copies @p len bytes into @p out (adds the NUL). @return PS_OK or PS_ENOMEM. */
PS_EXTERN int ps_bytes_set(ps_bytes *out, const char *data, size_t len);

/** What a transform asks the backend to write. */
typedef struct ps_write {
    /** The new value, malloc'd (the backend frees it). data == NULL: write nothing,
     *  and update returns PS_OK. */
    ps_bytes doc;
    /** Nonzero: in the same transaction, keep the current bytes aside in the
     *  quarantine (with @c reason) before they are replaced. */
    int quarantine;
    char reason[160];
} ps_write;

/**
 * Computes the value to store from the current one.
 * @param[out] out zeroed by the backend before each call.
 * @param current the stored bytes, or NULL when the key is absent. Borrowed.
 * @return PS_OK to write @c out; any negative ps_status aborts the update: nothing is
 *         written and update returns that code. May be called several times for one
 *         update (after a conflict), so it must depend only on @p current and its own
 *         inputs. Called on the thread that called update.
 */
typedef int (*ps_transform_fn)(ps_write *out, const ps_bytes *current, void *userdata);

/** list callback: return nonzero to stop the listing. */
typedef int (*ps_key_fn)(const char *key, void *userdata);

/** One quarantined original, as passed to a quarantine listing callback. */
typedef struct ps_quarantine_entry {
    int64_t id;            /**< unique, increasing */
    const char *store;
    const char *key;
    double saved_at;       /**< Unix seconds, backend clock */
    const char *reason;
    ps_bytes doc;          /**< the original bytes, borrowed */
} ps_quarantine_entry;

/** quarantine listing callback: return nonzero to stop. */
typedef int (*ps_quarantine_fn)(const ps_quarantine_entry *entry, void *userdata);

/** 2 added server_time. A backend may still say 1 (it then has no server_time). */
#define PS_BACKEND_VERSION 2

/** The vtable. Embed it first in your backend struct and downcast. */
struct ps_backend {
    unsigned int version; /**< first member, always: PS_BACKEND_VERSION */

    /**
     * Reads the value of @p key. @param[out] out the bytes (caller disposes).
     * @return PS_OK; PS_ENOTFOUND (absent; out zeroed); PS_EBACKEND (I/O failure).
     */
    int (*get)(ps_bytes *out, ps_backend *backend, const char *store, const char *key);

    /**
     * Atomic read → transform → compare-and-set on the version, retried on conflict
     * (a bounded number of times, then PS_ECONFLICT). Writes nothing when transform
     * fails, and at most one value per successful call.
     * @return PS_OK; the transform's code; PS_ECONFLICT; PS_EBACKEND.
     */
    int (*update)(ps_backend *backend, const char *store, const char *key,
                  ps_transform_fn transform, void *userdata);

    /** Frees the backend and everything it holds. Required. */
    void (*free)(ps_backend *backend);

    /** Optional. Calls @p fn for each key of @p store starting with @p prefix (NULL or
     *  "" = all), in key order. @return PS_OK; PS_EBACKEND. */
    int (*list)(ps_backend *backend, const char *store, const char *prefix, ps_key_fn fn,
                void *userdata);

    /** Optional. Deletes @p key. @return PS_OK; PS_ENOTFOUND; PS_EBACKEND. */
    int (*remove)(ps_backend *backend, const char *store, const char *key);

    /** Optional. Lists quarantined originals of @p store (NULL = all stores) and
     *  @p key (NULL = all keys), oldest first. @return PS_OK; PS_EBACKEND. */
    int (*quarantine_list)(ps_backend *backend, const char *store, const char *key,
                           ps_quarantine_fn fn, void *userdata);

    /* Version 2 members go below this line, never above. */

    /**
     * Optional (version >= 2). The store's own clock, for a store shared by several
     * machines: @p out = its current time in Unix seconds (PostgreSQL:
     * clock_timestamp()), in one round trip. Leave NULL when the store has no clock of
     * its own (memory:, sqlite: live on one machine, with one clock). The service
     * measures its offset to this clock and stamps LastUpdate and ProfileCreateTime on
     * it, so servers whose clocks disagree still agree on dead session locks.
     * @return PS_OK; PS_EBACKEND.
     */
    int (*server_time)(double *out, ps_backend *backend);

    /* Version 3 members go below this line, never above. */
};

/** Static initializer: { PS_BACKEND_VERSION } with every member NULL. */
#define PS_BACKEND_INIT {PS_BACKEND_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL}

/** Zeroes @p backend and sets its version. @return PS_OK; PS_EINVAL (bad version). */
PS_EXTERN int ps_backend_init(ps_backend *backend, unsigned int version);

/**
 * Opens a backend from a URL: "memory:" (a fresh in-process store), "memory:NAME"
 * (a process-wide store shared by every handle with that NAME), "sqlite:PATH",
 * "postgres://…" / "postgresql://…", or "faulty:OPTIONS:INNER-URL".
 *
 * faulty: is a shim for reliability tests: it opens INNER-URL (any URL, faulty:
 * included) and forwards every call, injecting faults on a seeded schedule.
 * OPTIONS is a comma-separated list, possibly empty, of NAME=VALUE:
 *   seed=N          the schedule's seed (unsigned integer; default 1). Each handle
 *                   draws from its own generator, so one thread's calls on a fresh
 *                   handle see the same faults in every run.
 *   error=P         probability (0..1) that a call fails before reaching the inner
 *                   backend: PS_EBACKEND "injected fault" (every member).
 *   lost_reply=P    probability that an update is made, commits, and then reports
 *                   PS_EBACKEND "injected lost reply": the caller retries a write that
 *                   already happened.
 *   conflict=P      probability that an update first runs its transform on the
 *                   current value and throws the result away, as after a lost
 *                   compare-and-set, before the real update (transforms re-run).
 *   latency_ms=N    each call first sleeps a uniform random 0..N ms (default 0).
 *   limit=N         stop injecting errors, lost replies and conflicts after N of
 *                   them (default 0: no limit).
 *   reads=0|1       0: reads (get, list, quarantine_list, server_time) never fail,
 *                   only update and remove do (default 1).
 * Example: "faulty:seed=7,error=0.05,lost_reply=0.02,conflict=0.05,latency_ms=2:
 * sqlite:/tmp/x.db" (one string). The handle has the inner backend's version and
 * its optional members only where the inner one has them.
 * @param[out] out new; free with ps_backend_free.
 * @return PS_OK; PS_EINVAL (unknown scheme, empty path); PS_EBACKEND; PS_ENOMEM.
 */
PS_EXTERN int ps_backend_open(ps_backend **out, const char *url);

/** Checks a backend's version and required members. @return PS_OK or PS_EINVAL. */
PS_EXTERN int ps_backend_check(const ps_backend *backend);

/** Calls backend->free. NULL is accepted. */
PS_EXTERN void ps_backend_free(ps_backend *backend);

/**
 * Records a failure for ps_error_last() on this thread; for backend authors.
 * printf-style. @return @p code, so `return ps_error_set(PS_EBACKEND, "…");` works.
 * Thread-safe.
 */
PS_EXTERN int ps_error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif

#endif /* PROFILESERVICE_BACKEND_H */
