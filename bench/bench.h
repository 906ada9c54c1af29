/*
 * bench.h — what the bench/ programs share: clocks, a counting wrapper over the
 * backend vtable, the 4 KB profile document, raw pre-filling, percentiles, and the
 * RESULT lines that bench/run.sh collects into bench/results/results.md.
 *
 * Each program answers one question and prints ratios against the raw backend,
 * measured in the same run (STYLE.md "Tests and benchmarks").
 */
#ifndef PS_BENCH_H
#define PS_BENCH_H

#include <profileservice.h>
#include <profileservice/backend.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- clocks ------------------------------------------------------------------------ */

/** Monotonic seconds. */
double bench_now(void);
/** CPU seconds (user + system) of the whole process, all threads (RUSAGE_SELF). */
double bench_cpu(void);
/** Sleeps @p seconds (real time). */
void bench_sleep(double seconds);

/* ---- command line ------------------------------------------------------------------ */

typedef struct bench_args {
    const char *url; /**< store URL: memory:…, sqlite:PATH, postgres://…; "env:VAR" is
                          read from the environment */
    const char *label; /**< "memory", "sqlite", "postgres" */
    int smoke;         /**< --smoke: seconds, tiny sizes */
    int argc;          /**< the remaining options, for the program */
    char **argv;
} bench_args;

/**
 * Parses `PROGRAM URL [--smoke] [options…]`. An sqlite file is removed first (with its
 * -wal and -shm) so every run starts from an empty store. Exits 2 on a usage error,
 * 77 when the URL is env:VAR and VAR is unset (no PostgreSQL: skipped).
 */
void bench_parse_args(bench_args *out, int argc, char **argv, const char *usage);
/** The value of option @p name (e.g. "--seconds") in @p a, or @p fallback. */
double bench_opt(const bench_args *a, const char *name, double fallback);
/** Nonzero when the flag @p name is present. */
int bench_flag(const bench_args *a, const char *name);

/** Removes an sqlite store file and its -wal / -shm companions (url "sqlite:PATH"). */
void bench_remove_sqlite(const char *url);

/* ---- results ----------------------------------------------------------------------- */

/**
 * Prints one machine-readable line for run.sh:
 *   RESULT<TAB>bench<TAB>backend<TAB>metric<TAB>value<TAB>unit<TAB>target<TAB>verdict
 * @p target may be "" (no target); @p verdict "met", "MISSED" or "" (no target).
 */
void bench_result(const char *bench, const char *backend, const char *metric,
                  double value, const char *unit, const char *target,
                  const char *verdict);
/** A free-form note for results.md (NOTE<TAB>bench<TAB>backend<TAB>text). */
void bench_note(const char *bench, const char *backend, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/** Aborts with file:line and the library's last message when @p rc is not PS_OK. */
#define BENCH_OK(call)                                                                   \
    do {                                                                                 \
        int bench_rc_ = (call);                                                          \
        if (bench_rc_ != PS_OK)                                                          \
            bench_fail(__FILE__, __LINE__, #call, bench_rc_);                            \
    } while (0)
void bench_fail(const char *file, int line, const char *what, int rc);
/** Prints a message and exits 1. */
void bench_die(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

/* ---- a counting wrapper over the backend vtable ------------------------------------ */

/**
 * Counters of one wrapper. They outlive the wrapper (the service frees its backend at
 * ps_service_free), so the caller owns them. Thread-safe.
 */
typedef struct bench_counts {
    atomic_long gets;       /**< get calls */
    atomic_long updates;    /**< update calls that returned */
    atomic_long writes;     /**< updates whose transform asked to write */
    atomic_long transforms; /**< transform calls (> updates means CAS retries) */
    atomic_long failures;   /**< updates that returned an error */
    atomic_long others;     /**< list / remove / quarantine_list */
    atomic_long
        clock_reads; /**< server_time (backend version 2), when the header has it */
    atomic_llong transform_ns; /**< time inside transforms (the library's JSON work) */
    atomic_llong update_ns;    /**< time inside update, transform included */
    pthread_mutex_t lock;      /**< with @c changed: wait for update counts */
    pthread_cond_t changed;
} bench_counts;

void bench_counts_init(bench_counts *c);
void bench_counts_dispose(bench_counts *c);
/** Waits until c->updates >= @p target or @p timeout seconds pass. @return nonzero
 *  when reached. */
int bench_counts_wait(bench_counts *c, long target, double timeout);
/** Ticks @p service (its per-key queues only advance in ps_service_update) until
 *  c->updates >= @p target; sleeps on the counter between ticks. @return nonzero when
 *  reached within @p timeout seconds. */
int bench_tick_until_updates(ps_service *service, bench_counts *c, long target,
                             double timeout);

/**
 * Wraps @p inner (taken: freed with the wrapper) so each call is counted in
 * @p counts. It keeps @p inner's version; optional members are provided only when
 * @p inner has them, as the faulty shim does. @param[out] out new; give it to a service
 * (config.backend) or free it with ps_backend_free.
 */
int bench_counting_backend_new(ps_backend **out, ps_backend *inner, bench_counts *counts);

/* ---- the profile document ---------------------------------------------------------- */

/**
 * A game-like Data object (coins, inventory, quests, settings) whose compact encoding
 * is about @p bytes long; @p seed varies the numbers. @return new.
 */
json_t *bench_data_new(size_t bytes, unsigned seed);

/** Data size that makes the whole stored document about 4 KB. */
#define BENCH_DATA_BYTES 3800

/**
 * A complete stored document in ProfileService's layout with @p data (borrowed), no
 * active session, encoded compactly with sorted keys (as the library writes it).
 * @return malloc'd NUL-terminated bytes; *len set.
 */
char *bench_doc_encode(const json_t *data, size_t *len);

/**
 * Writes the same document bytes to @p n keys ("<prefix><i>", i in [first, first+n))
 * through the raw backend's update, from @p threads threads. Used to pre-fill a store
 * quickly without the library.
 */
void bench_prefill(ps_backend *backend, const char *store, const char *prefix, long first,
                   long n, const char *doc, size_t len, int threads);

/* ---- statistics -------------------------------------------------------------------- */

/** The @p p-th percentile (0..100) of @p v (sorted in place). */
double bench_percentile(double *v, size_t n, double p);
/** Median of @p v (sorted in place). */
double bench_median(double *v, size_t n);

/* ---- a service --------------------------------------------------------------------- */

/**
 * A service on @p url behind a counting wrapper (@p counts may be NULL: no wrapper),
 * with @p config's settings (NULL: defaults) and the real clock.
 */
ps_service *bench_service_new(const char *url, bench_counts *counts,
                              const ps_config *config);

/** Resident set size of this process in bytes (/proc/self/statm). */
size_t bench_rss(void);
/** Bytes in use by malloc (mallinfo2().uordblks + hblkhd), all arenas. */
size_t bench_heap_in_use(void);

#endif /* PS_BENCH_H */
