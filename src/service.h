/*
 * service.h — the core's shared internals: the service, its per-key FIFO of backend
 * operations, and the structs of stores and profiles. Host thread only, except where
 * a member says "worker".
 */
#ifndef PS_SERVICE_H
#define PS_SERVICE_H

#include "profileservice.h"
#include "profileservice/backend.h"
#include "signal.h"
#include "strmap.h"
#include "worker.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- operations: one backend call for one (store, key), run on a worker -------- */

typedef struct ps_op ps_op;
typedef struct ps_key_slot ps_key_slot;

/* The kinds differ only in their three hooks; each kind embeds ps_op first. */
typedef struct ps_op_kind {
    const char *name;
    /* Host, when the op reaches the head of its key's queue. Takes snapshots of host
     * state. Nonzero: drop the op (finish is not called, dispose is). */
    int (*prepare)(ps_op *op);
    /* Worker: the backend call. Sets op->status (and op->message on failure). */
    void (*run)(ps_op *op);
    /* Host: applies the result; fires listeners. */
    void (*finish)(ps_op *op);
    /* Host: frees the op. */
    void (*dispose)(ps_op *op);
} ps_op_kind;

struct ps_op {
    ps_job job; /* first: the pool sees only this */
    const ps_op_kind *kind;
    ps_service *service;
    ps_profile_store *store;
    char *key;
    ps_op *next_in_slot;
    ps_key_slot *slot;
    int status;         /* worker's result */
    char message[320];  /* worker's failure message */
};

/* Per-(store, key) FIFO: this service's calls on a key hit the store in call order. */
struct ps_key_slot {
    char *id;            /* map key: store name + '\x1f' + key */
    ps_op *head, **tail; /* queued, not yet dispatched */
    ps_op *running;      /* dispatched to a worker, not yet finished */
    double last_start;   /* monotonic time of the last dispatch (write_cooldown) */
    ps_key_slot *next_waiting; /* in service->waiting_slots while cooling down */
    int in_waiting;
    int held; /* a failed call waits to be retried in its place: nothing else starts */
};

/* ---- pending loads -------------------------------------------------------------- */

typedef enum load_mode { LOAD_HANDLER, LOAD_FORCE, LOAD_STEAL } load_mode;

typedef struct ps_load_waiter {
    struct ps_load_waiter *next;
    ps_profile_done_fn done;
    ps_not_released_fn handler;
    void *userdata;
} ps_load_waiter;

/* One LoadProfileAsync in progress for a key. Newer calls for the same key join it:
 * only the newest waiter gets the profile, older ones PS_ECANCELLED (ProfileService's
 * "yoink", SEMANTICS.md §4.2). */
typedef struct ps_load_request {
    struct ps_load_request *next_timer; /* in service->timers while waiting to retry */
    ps_profile_store *store;
    char *key;
    ps_load_waiter *waiters; /* newest first */
    load_mode mode;
    int request_force_load; /* write ForceLoadSession on the next attempt */
    int steal;              /* force_load_max_steps reached */
    int steps;
    double retry_at; /* monotonic */
    int maybe_taken; /* the last attempt failed after it may have committed (a lost
                        reply): the store may hold our session */
} ps_load_request;

/* A generic retry timer (release saves, views) keyed by due time. */
typedef struct ps_timer {
    struct ps_timer *next;
    double due;
    void (*fire)(struct ps_timer *timer); /* host */
    int early_on_shutdown; /* fire at once when the service locks (it will give up) */
} ps_timer;

/* ---- the service ---------------------------------------------------------------- */

struct ps_service {
    ps_config config;
    char *store_url;
    char *job_id;
    ps_backend *backend;
    ps_pool *pool;
    atomic_int locked; /* ServiceLocked; workers read it inside load transforms */
    int in_update;     /* depth of update/listener frames: blocking calls refuse */
    int shut_down;     /* shutdown completed */

    ps_signal issue_signal, corruption_signal, critical_state_signal;
    double *issue_times; /* monotonic times of recent issues (ring-free array) */
    size_t issue_count, issue_cap;
    int critical;
    double critical_since;

    ps_profile_store **stores;
    size_t store_count;

    ps_strmap slots;                 /* id → ps_key_slot */
    ps_key_slot *waiting_slots;      /* slots with queued ops held by write_cooldown */
    ps_load_request *load_timers;    /* loads waiting to retry */
    ps_timer *timers;                /* other retries */
    int ops_in_flight;               /* queued or running ops, all keys */

    /* Auto-save: a circular list (array) of active profiles and a cursor. */
    ps_profile **autosave;
    size_t autosave_count, autosave_cap, autosave_cursor;
    double autosave_last_tick;

    ps_profile *profiles; /* every live profile object, for service_free */
    /* GlobalUpdateProfileAsync calls are numbered per service *instance*: the id
     * written into a document is [request_origin, seq], where request_origin is the
     * job id plus a random suffix drawn at ps_service_new. A job id alone is not
     * unique — hosts reuse names, a restarted server keeps its fixed job id, two
     * services in one process may share one — and a fresh service numbering from 1
     * again would take its first gift for a retry of an old one and drop it. */
    char *request_origin;
    unsigned long long gu_request_seq;

    /* The store's clock (README "Clocks"): stored timestamps are the local wall clock
     * + clock_offset, measured with backend->server_time when the store has a clock
     * and none is injected. Workers refresh it; all under clock_lock. */
    pthread_mutex_t clock_lock;
    double clock_offset; /* store clock - local clock, seconds */
    double clock_skew;   /* tests only (ps__service_set_clock_skew) */
    double clock_next;   /* monotonic time of the next measurement */
    int clock_busy;      /* a worker is measuring */
};

struct ps_profile_store {
    ps_service *service;
    char *name;
    json_t *template_;      /* deep copy, never mutated (workers copy from it) */
    ps_strmap active;       /* key → active ps_profile */
    ps_strmap loading;      /* key → ps_load_request */
};

/* ---- time ---------------------------------------------------------------------- */

/* Unix seconds for stored timestamps (LastUpdate, ProfileCreateTime): the injected
 * clock as it is; else the system clock moved onto the store's clock when the backend
 * has server_time. Thread-safe. */
double ps__service_wall_time(const ps_service *service);
/* TESTS ONLY: pretends this machine's wall clock is off by @p seconds (the injected or
 * system clock + seconds, for stamps only), then measures the store's clock again at
 * once (one round trip when the backend has server_time). Host thread. */
void ps__service_set_clock_skew(ps_service *service, double seconds);
/* Seconds on a monotonic clock for scheduling. Thread-safe. */
double ps__service_mono_time(const ps_service *service);

/* ---- operations ---------------------------------------------------------------- */

/* Allocates an op of @p size bytes (a kind's struct, ps_op first). */
ps_op *ps__op_new(size_t size, const ps_op_kind *kind, ps_profile_store *store,
                  const char *key);
/* Appends @p op to its key's FIFO; dispatches it when the key is idle. Takes @p op. */
void ps__service_enqueue(ps_service *service, ps_op *op);
/* As ps__service_enqueue, but ahead of the ops already queued for the key: the second
 * half of a two-step call (read, then write) runs before anyone else's next call. */
void ps__service_enqueue_next(ps_service *service, ps_op *op);
/* From a finish (or prepare) hook: the key's queue waits for this call's retry, so
 * a retried write keeps its place before later calls of this service on the key. */
void ps__service_hold_key(ps_op *op);
/* Ends a hold: @p retry (may be NULL) runs first, then the rest of the queue. */
void ps__service_resume_key(ps_service *service, ps_profile_store *store,
                            const char *key, ps_op *retry);
/* Worker: the op's one atomic backend update with @p transform (userdata = op);
 * a failure goes to op->status / op->message. */
void ps__op_update(ps_op *op, ps_transform_fn transform);
/* Records a worker failure into op->status / op->message from ps_error_last(). */
void ps__op_fail(ps_op *op, int status);

/* ---- signals ------------------------------------------------------------------- */

void ps__service_issue(ps_service *service, const char *message, const char *store,
                       const char *key);
void ps__service_corruption(ps_service *service, const char *store, const char *key);

/* ---- timers -------------------------------------------------------------------- */

void ps__service_add_timer(ps_service *service, ps_timer *timer, double due);
void ps__service_add_load_timer(ps_service *service, ps_load_request *request,
                                double due);

/* ---- blocking calls ------------------------------------------------------------ */

/* Runs ticks until *done is nonzero, sleeping through idle waits. */
int ps__service_run_until(ps_service *service, const int *done);
/* PS_EINVAL with a message when a blocking call is made from inside a listener. */
int ps__service_check_can_block(ps_service *service);

/* ---- auto-save ------------------------------------------------------------------ */

int ps__autosave_add(ps_service *service, ps_profile *profile);
void ps__autosave_remove(ps_service *service, ps_profile *profile);

/* ---- helpers -------------------------------------------------------------------- */

/* Validates a store name or profile key: 1..50 bytes of UTF-8. */
int ps__check_name(const char *what, const char *name);

#define PS_MAX_NAME 50

#endif /* PS_SERVICE_H */
