/*
 * backends.h — private to src/backend/: the per-backend constructors that
 * ps_backend_open dispatches to, and the helpers every implementation shares
 * (argument checks, the compare-and-set retry loop of update).
 */
#ifndef PS_BACKENDS_H
#define PS_BACKENDS_H

#include "profileservice/backend.h"

#include <stdint.h>

/** "memory:" (@p name NULL or ""): a fresh, empty in-process store, freed with the
 *  handle. "memory:NAME": a new handle on the process-wide store NAME, created empty
 *  on first use and kept until the process exits. @param[out] out new. */
int ps__memory_backend_open(ps_backend **out, const char *name);

/** "sqlite:PATH": @p path non-empty; the file is created (mode 0600) when absent. */
int ps__sqlite_backend_open(ps_backend **out, const char *path);

/** "postgres://…" / "postgresql://…": @p conninfo is the whole URL (libpq accepts it).
 *  Implemented in postgres.c. */
int ps__postgres_backend_open(ps_backend **out, const char *conninfo);

/** "faulty:OPTIONS:INNER-URL": @p spec is what follows "faulty:". faulty.c. */
int ps__faulty_backend_open(ps_backend **out, const char *spec);

/** What a faulty: handle (or every faulty: handle of the process) has injected. */
typedef struct ps_faulty_stats {
    unsigned long long calls;        /**< member calls received */
    unsigned long long errors;       /**< calls failed before reaching the inner one */
    unsigned long long lost_replies; /**< updates that committed, reported failed */
    unsigned long long conflicts;    /**< updates whose transform was run and dropped */
    unsigned long long delays;       /**< calls that slept (latency_ms) */
} ps_faulty_stats;

/**
 * The counters of faulty handle @p backend, or with @p backend NULL the totals of
 * every faulty: handle this process opened (freed ones included). Thread-safe.
 * @return PS_OK; PS_EINVAL (@p backend is not a faulty: handle).
 */
int ps__faulty_stats(ps_faulty_stats *out, ps_backend *backend);

/**
 * Changes the schedule of a live faulty handle: @p options uses the OPTIONS
 * grammar of ps_backend_open ("error=0,lost_reply=1,limit=1"); options it does not
 * name keep their value, seed= restarts the generator, limit= restarts its count.
 * For tests that switch faults on and off mid-run. Thread-safe.
 * @return PS_OK; PS_EINVAL (not a faulty handle, bad options: nothing changed).
 */
int ps__faulty_configure(ps_backend *backend, const char *options);

/* ---- shared helpers (backend.c) -------------------------------------------------- */

/** Attempts update makes before it gives up with PS_ECONFLICT. */
#define PS__UPDATE_MAX_ATTEMPTS 1000

/** What ops->write returns when the version moved since ops->read: try again. */
#define PS__CAS_RETRY 1

/**
 * Checks @p store and @p key for a member named @p what: non-NULL and non-empty.
 * @return PS_OK or PS_EINVAL with a message naming the member and the argument.
 */
int ps__backend_check_key(const char *what, const char *store, const char *key);

/** The two halves of one compare-and-set attempt, provided by a backend. */
typedef struct ps__cas_ops {
    /** Reads the current value into @p current (caller disposes) and its version.
     *  Sets *present = 0 (and current zeroed) when the key is absent.
     *  Must not leave any lock or transaction open. @return PS_OK or an error. */
    int (*read)(void *ctx, ps_bytes *current, int *present, int64_t *version);
    /** Writes @p w (w->doc.data non-NULL) if the key still has @p version (or is
     *  still absent when !present), keeping @p current aside first when
     *  w->quarantine && present — all atomically. May steal w->doc (zero it).
     *  @return PS_OK; PS__CAS_RETRY (someone wrote in between); an error. */
    int (*write)(void *ctx, ps_write *w, const ps_bytes *current, int present,
                 int64_t version);
} ps__cas_ops;

/**
 * The update loop of every backend: read → transform (no lock held) → write,
 * retried on PS__CAS_RETRY up to PS__UPDATE_MAX_ATTEMPTS times. Handles the
 * transform's contract (zeroed ps_write, no write on failure, data NULL = no write)
 * and frees whatever the transform allocated. @return PS_OK; the transform's code;
 * PS_ECONFLICT; the backend's error.
 */
int ps__backend_cas(const ps__cas_ops *ops, void *ctx, const char *store,
                    const char *key, ps_transform_fn transform, void *userdata);

/** Wall-clock time in Unix seconds (quarantine's saved_at). */
double ps__backend_now(void);

#endif /* PS_BACKENDS_H */
