/*
 * service.c — ProfileService: configuration, the host tick, the per-key FIFO of
 * backend operations, retry timers, the issue / critical-state bookkeeping and
 * shutdown. Store and profile semantics live in store.c and profile.c.
 */
#include "service.h"

#include "document.h"
#include "error.h"
#include "profile.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_STORE_URL "sqlite:profiles.db"

void ps_config_init(ps_config *config)
{
    if (!config)
        return;
    memset(config, 0, sizeof *config);
    config->version = PS_CONFIG_VERSION;
    config->store_url = NULL;
    config->auto_save_period = 30;
    config->write_cooldown = 0;
    config->load_repeat_delay = 7;
    config->force_load_max_steps = 8;
    config->assume_dead_session_lock = 30 * 60;
    config->issue_count_for_critical_state = 5;
    config->issue_last = 120;
    config->critical_state_last = 120;
    config->max_document_size = 4 * 1024 * 1024;
    config->worker_threads = 4;
}

/* ---- time ---------------------------------------------------------------------- */

static double clock_seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double ps__service_wall_time(const ps_service *service)
{
    ps_service *s = (ps_service *)service; /* for the lock only */
    double local = s->config.clock ? s->config.clock(s->config.clock_userdata)
                                   : clock_seconds(CLOCK_REALTIME);
    pthread_mutex_lock(&s->clock_lock);
    double shift = s->clock_skew + s->clock_offset;
    pthread_mutex_unlock(&s->clock_lock);
    return local + shift;
}

double ps__service_mono_time(const ps_service *service)
{
    if (service->config.clock)
        return service->config.clock(service->config.clock_userdata);
    return clock_seconds(CLOCK_MONOTONIC);
}

/* ---- the store's clock (README "Clocks") ---------------------------------------- *
 * Servers on one PostgreSQL store may run on machines whose clocks disagree, and the
 * dead-lock rule compares a LastUpdate one server wrote with another server's "now".
 * So when the store has a clock (backend server_time) and none is injected, every
 * stamp is this machine's clock plus its measured offset to the store's clock: one
 * round trip at ps_service_new, then again every STORE_CLOCK_PERIOD, on a worker just
 * before an op (never inside a transform: that would need a second connection while
 * the op holds one). An injected clock (ps_config.clock) is the whole truth: tests
 * and replays own their time, and the store is not asked. */
#define STORE_CLOCK_PERIOD 300.0 /* seconds between measurements */
#define STORE_CLOCK_RETRY 10.0   /* after a failed or slow one */
#define STORE_CLOCK_MAX_RTT 2.0  /* a slower answer says little about "now" */

static int has_store_clock(const ps_service *s)
{
    const ps_backend *b = s->backend;
    return !s->config.clock && b && b->version >= 2 && b->server_time;
}

/* One round trip; the offset is taken against the middle of it. A failure keeps the
 * last offset (0 before the first success) and is tried again later, silently: the
 * op that follows meets the same store and reports its own failure. */
static void store_clock_measure(ps_service *s)
{
    double server = 0, t0 = clock_seconds(CLOCK_REALTIME);
    int rc = s->backend->server_time(&server, s->backend);
    double t1 = clock_seconds(CLOCK_REALTIME);
    int ok = rc == PS_OK && isfinite(server) && t1 - t0 <= STORE_CLOCK_MAX_RTT;
    double now = ps__service_mono_time(s);
    pthread_mutex_lock(&s->clock_lock);
    if (ok)
        s->clock_offset = server - (t0 + t1) / 2 - s->clock_skew;
    s->clock_next = now + (ok ? STORE_CLOCK_PERIOD : STORE_CLOCK_RETRY);
    s->clock_busy = 0;
    pthread_mutex_unlock(&s->clock_lock);
}

/* Worker, before an op: measures when due, one worker at a time. */
static void store_clock_refresh(ps_service *s)
{
    if (!has_store_clock(s))
        return;
    double now = ps__service_mono_time(s);
    pthread_mutex_lock(&s->clock_lock);
    int due = !s->clock_busy && now >= s->clock_next;
    if (due)
        s->clock_busy = 1;
    pthread_mutex_unlock(&s->clock_lock);
    if (due)
        store_clock_measure(s);
}

void ps__service_set_clock_skew(ps_service *service, double seconds)
{
    pthread_mutex_lock(&service->clock_lock);
    service->clock_skew = seconds;
    pthread_mutex_unlock(&service->clock_lock);
    if (has_store_clock(service))
        store_clock_measure(service);
}

static void service_sleep(ps_service *service, double seconds)
{
    if (seconds <= 0)
        return;
    if (service->config.sleep) {
        service->config.sleep(seconds, service->config.clock_userdata);
        return;
    }
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* ---- construction -------------------------------------------------------------- */

int ps__check_name(const char *what, const char *name)
{
    if (!name)
        return ps__error_set(PS_EINVAL, "%s is NULL", what);
    if (!*name)
        return ps__error_set(PS_EINVAL, "%s is empty", what);
    if (strlen(name) > PS_MAX_NAME)
        return ps__error_set(PS_EINVAL, "%s is longer than %d bytes", what, PS_MAX_NAME);
    if (!ps__utf8_name_ok(name, PS_MAX_NAME))
        return ps__error_set(PS_EINVAL, "%s is not valid UTF-8", what);
    return PS_OK;
}

static int check_config(const ps_config *c)
{
    if (c->version != PS_CONFIG_VERSION)
        return ps__error_set(PS_EINVAL, "config version %u is not %d (call ps_config_init)",
                             c->version, PS_CONFIG_VERSION);
    if (!(c->auto_save_period > 0) || !(c->load_repeat_delay >= 0) ||
        !(c->write_cooldown >= 0) || !(c->assume_dead_session_lock > 0) ||
        !(c->issue_last > 0) || !(c->critical_state_last >= 0))
        return ps__error_set(PS_EINVAL, "config has a negative or zero timing setting");
    if (c->force_load_max_steps < 1 || c->issue_count_for_critical_state < 1)
        return ps__error_set(PS_EINVAL, "force_load_max_steps and "
                                        "issue_count_for_critical_state must be >= 1");
    if (c->max_document_size < 64)
        return ps__error_set(PS_EINVAL, "max_document_size %zu is too small",
                             c->max_document_size);
    if (c->job_id && (!*c->job_id || !ps__utf8_name_ok(c->job_id, 256)))
        return ps__error_set(PS_EINVAL, "job_id must be 1..256 bytes of UTF-8");
    return PS_OK;
}

/* host name + pid + random suffix: unique per process run (SEMANTICS.md §13 bug 11). */
static char *make_job_id(void)
{
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    unsigned int suffix = 0;
    if (getrandom(&suffix, sizeof suffix, 0) != (ssize_t)sizeof suffix)
        suffix = (unsigned int)time(NULL) ^ (unsigned int)clock();
    char buf[128];
    snprintf(buf, sizeof buf, "%s-%ld-%08x", host, (long)getpid(), suffix);
    return strdup(buf);
}

/* job id + "/" + 64 random bits: see request_origin in service.h. */
static char *make_request_origin(const char *job_id)
{
    unsigned long long nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        nonce = ((unsigned long long)time(NULL) << 32) ^ (unsigned long long)clock() ^
                (unsigned long long)(uintptr_t)&nonce;
    size_t size = strlen(job_id) + 18;
    char *origin = malloc(size);
    if (origin)
        snprintf(origin, size, "%s/%016llx", job_id, nonce);
    return origin;
}

static int open_backend(ps_service *s, const ps_config *config)
{
    if (config->backend) {
        s->backend = config->backend;
        return ps_backend_check(s->backend);
    }
    const char *url = config->store_url;
    if (url && !*url)
        return ps__error_set(PS_EINVAL, "store url is empty");
    if (!url)
        url = getenv("PROFILESERVICE_STORE");
    if (!url || !*url)
        url = DEFAULT_STORE_URL;
    s->store_url = strdup(url);
    if (!s->store_url)
        return ps__error_oom();
    return ps_backend_open(&s->backend, url);
}

int ps_service_new(ps_service **out, const ps_config *config)
{
    if (!out || !config) {
        if (config && config->backend)
            ps_backend_free(config->backend);
        return ps__error_set(PS_EINVAL, "ps_service_new: out and config are required");
    }
    *out = NULL;
    int rc = check_config(config);
    ps_service *s = rc == PS_OK ? calloc(1, sizeof *s) : NULL;
    if (rc == PS_OK && !s)
        rc = ps__error_oom();
    if (rc != PS_OK) {
        ps_backend_free(config->backend);
        return rc;
    }
    s->config = *config;
    s->config.store_url = NULL;
    s->config.backend = NULL;
    pthread_mutex_init(&s->clock_lock, NULL);
    ps__signal_init(&s->issue_signal);
    ps__signal_init(&s->corruption_signal);
    ps__signal_init(&s->critical_state_signal);
    s->job_id = config->job_id ? strdup(config->job_id) : make_job_id();
    s->config.job_id = s->job_id;
    if (s->job_id)
        s->request_origin = make_request_origin(s->job_id);
    if (!s->job_id || !s->request_origin)
        rc = ps__error_oom();
    if (rc == PS_OK)
        rc = open_backend(s, config);
    if (rc == PS_OK)
        rc = ps__pool_new(&s->pool, config->worker_threads);
    if (rc == PS_OK && has_store_clock(s))
        store_clock_measure(s);
    if (rc != PS_OK) {
        int saved = rc;
        s->shut_down = 1;
        ps_service_free(s);
        return saved;
    }
    *out = s;
    return PS_OK;
}

int ps_service_locked(const ps_service *service)
{
    return service ? atomic_load(&((ps_service *)service)->locked) : 1;
}

int64_t ps_service_place_id(const ps_service *service)
{
    return service ? service->config.place_id : 0;
}

const char *ps_service_job_id(const ps_service *service)
{
    return service ? service->job_id : NULL;
}

int ps_service_is_critical_state(const ps_service *service)
{
    return service ? service->critical : 0;
}

/* ---- signals ------------------------------------------------------------------- */

int ps_service_issue_signal_connect(ps_connection **out, ps_service *service,
                                    ps_issue_fn fn, void *userdata,
                                    void (*free_userdata)(void *userdata))
{
    if (!service)
        return ps__error_set(PS_EINVAL, "service is NULL");
    return ps__signal_connect(out, &service->issue_signal, (ps_generic_fn)fn, userdata,
                              free_userdata);
}

int ps_service_corruption_signal_connect(ps_connection **out, ps_service *service,
                                         ps_corruption_fn fn, void *userdata,
                                         void (*free_userdata)(void *userdata))
{
    if (!service)
        return ps__error_set(PS_EINVAL, "service is NULL");
    return ps__signal_connect(out, &service->corruption_signal, (ps_generic_fn)fn,
                              userdata, free_userdata);
}

int ps_service_critical_state_signal_connect(ps_connection **out, ps_service *service,
                                             ps_critical_state_fn fn, void *userdata,
                                             void (*free_userdata)(void *userdata))
{
    if (!service)
        return ps__error_set(PS_EINVAL, "service is NULL");
    return ps__signal_connect(out, &service->critical_state_signal, (ps_generic_fn)fn,
                              userdata, free_userdata);
}

typedef struct issue_args {
    const char *message, *store, *key;
} issue_args;

static void invoke_issue(ps_connection *c, void *args)
{
    issue_args *a = args;
    ((ps_issue_fn)c->fn)(a->message, a->store, a->key, c->userdata);
}

static void invoke_corruption(ps_connection *c, void *args)
{
    issue_args *a = args;
    ((ps_corruption_fn)c->fn)(a->store, a->key, c->userdata);
}

static void invoke_critical(ps_connection *c, void *args)
{
    ((ps_critical_state_fn)c->fn)(*(int *)args, c->userdata);
}

void ps__service_issue(ps_service *service, const char *message, const char *store,
                       const char *key)
{
    if (service->issue_count == service->issue_cap) {
        size_t cap = service->issue_cap ? service->issue_cap * 2 : 16;
        double *times = realloc(service->issue_times, cap * sizeof *times);
        if (times) {
            service->issue_times = times;
            service->issue_cap = cap;
        }
    }
    if (service->issue_count < service->issue_cap)
        service->issue_times[service->issue_count++] = ps__service_mono_time(service);
    issue_args a = {message, store, key};
    service->in_update++;
    ps__signal_emit(&service->issue_signal, invoke_issue, &a);
    service->in_update--;
}

void ps__service_corruption(ps_service *service, const char *store, const char *key)
{
    issue_args a = {NULL, store, key};
    service->in_update++;
    ps__signal_emit(&service->corruption_signal, invoke_corruption, &a);
    service->in_update--;
}

/* Critical state (SEMANTICS.md §9): >= N issues within issue_last enters it; it ends
 * critical_state_last after the count last was >= N. */
static void update_critical_state(ps_service *s, double now)
{
    size_t keep = 0;
    for (size_t i = 0; i < s->issue_count; i++)
        if (now - s->issue_times[i] <= s->config.issue_last)
            s->issue_times[keep++] = s->issue_times[i];
    s->issue_count = keep;
    int many = keep >= (size_t)s->config.issue_count_for_critical_state;
    int change = -1;
    if (!s->critical && many) {
        s->critical = 1;
        s->critical_since = now;
        change = 1;
    } else if (s->critical && many) {
        s->critical_since = now;
    } else if (s->critical && now - s->critical_since > s->config.critical_state_last) {
        s->critical = 0;
        change = 0;
    }
    if (change >= 0)
        ps__signal_emit(&s->critical_state_signal, invoke_critical, &change);
}

/* ---- operations and the per-key FIFO ------------------------------------------- */

static void op_run_job(ps_job *job)
{
    ps_op *op = (ps_op *)job;
    store_clock_refresh(op->service);
    op->kind->run(op);
}

ps_op *ps__op_new(size_t size, const ps_op_kind *kind, ps_profile_store *store,
                  const char *key)
{
    ps_op *op = calloc(1, size);
    if (!op)
        return NULL;
    op->key = strdup(key);
    if (!op->key) {
        free(op);
        return NULL;
    }
    op->job.run = op_run_job;
    op->kind = kind;
    op->store = store;
    op->service = store->service;
    return op;
}

void ps__op_fail(ps_op *op, int status)
{
    op->status = status;
    ps__error_copy(op->message, sizeof op->message);
}

void ps__op_update(ps_op *op, ps_transform_fn transform)
{
    ps_backend *b = op->service->backend;
    int rc = b->update(b, op->store->name, op->key, transform, op);
    if (rc != PS_OK)
        ps__op_fail(op, rc);
}

static char *slot_id(ps_profile_store *store, const char *key)
{
    size_t n = strlen(store->name) + strlen(key) + 2;
    char *id = malloc(n);
    if (id)
        snprintf(id, n, "%s\x1f%s", store->name, key);
    return id;
}

static ps_key_slot *slot_get(ps_service *s, ps_profile_store *store, const char *key,
                             int create)
{
    char *id = slot_id(store, key);
    if (!id)
        return NULL;
    ps_key_slot *slot = ps__strmap_get(&s->slots, id);
    if (slot || !create) {
        free(id);
        return slot;
    }
    slot = calloc(1, sizeof *slot);
    if (!slot || ps__strmap_set(&s->slots, id, slot) != PS_OK) {
        free(slot);
        free(id);
        return NULL;
    }
    slot->id = id;
    slot->tail = &slot->head;
    slot->last_start = -1e300;
    return slot;
}

static void slot_free_if_idle(ps_service *s, ps_key_slot *slot)
{
    if (slot->head || slot->running || slot->in_waiting || slot->held)
        return;
    if (s->config.write_cooldown > 0 &&
        ps__service_mono_time(s) - slot->last_start < s->config.write_cooldown)
        return; /* keep its last_start until the cooldown has passed */
    ps__strmap_remove(&s->slots, slot->id);
    free(slot->id);
    free(slot);
}

static void op_dispose(ps_op *op)
{
    op->kind->dispose(op);
}

/* Starts the head op of an idle slot, unless the cooldown holds it back. */
static void slot_dispatch(ps_service *s, ps_key_slot *slot)
{
    while (slot->head && !slot->running && !slot->held) {
        double now = ps__service_mono_time(s);
        if (now - slot->last_start < s->config.write_cooldown) {
            if (!slot->in_waiting) {
                slot->in_waiting = 1;
                slot->next_waiting = s->waiting_slots;
                s->waiting_slots = slot;
            }
            return;
        }
        ps_op *op = slot->head;
        slot->head = op->next_in_slot;
        if (!slot->head)
            slot->tail = &slot->head;
        if (op->kind->prepare && op->kind->prepare(op) != 0) {
            s->ops_in_flight--;
            op_dispose(op);
            continue;
        }
        slot->running = op;
        slot->last_start = now;
        ps__pool_submit(s->pool, &op->job);
    }
}

static void slot_push_front(ps_key_slot *slot, ps_op *op)
{
    op->next_in_slot = slot->head;
    slot->head = op;
    if (slot->tail == &slot->head)
        slot->tail = &op->next_in_slot;
}

void ps__service_enqueue_next(ps_service *s, ps_op *op)
{
    ps_key_slot *slot = slot_get(s, op->store, op->key, 1);
    if (!slot) {
        ps__service_enqueue(s, op); /* reports the failure */
        return;
    }
    op->slot = slot;
    slot_push_front(slot, op);
    s->ops_in_flight++;
    slot_dispatch(s, slot);
}

void ps__service_enqueue(ps_service *s, ps_op *op)
{
    ps_key_slot *slot = slot_get(s, op->store, op->key, 1);
    if (!slot) {
        /* Out of memory: the op cannot be ordered; report it like a failed call. */
        ps__op_fail(op, ps__error_oom());
        ps__service_issue(s, op->message, op->store->name, op->key);
        op_dispose(op);
        return;
    }
    op->slot = slot;
    op->next_in_slot = NULL;
    *slot->tail = op;
    slot->tail = &op->next_in_slot;
    s->ops_in_flight++;
    slot_dispatch(s, slot);
}

void ps__service_hold_key(ps_op *op)
{
    op->slot->held = 1;
}

void ps__service_resume_key(ps_service *s, ps_profile_store *store, const char *key,
                            ps_op *retry)
{
    ps_key_slot *slot = slot_get(s, store, key, 0);
    if (slot)
        slot->held = 0;
    if (retry) {
        ps__service_enqueue_next(s, retry);
    } else if (slot) {
        slot_dispatch(s, slot);
        slot_free_if_idle(s, slot);
    }
}

/* Applies finished ops, then lets each freed slot start its next op. */
static void finish_done_ops(ps_service *s)
{
    ps_job *job = ps__pool_take_done(s->pool), *next;
    for (; job; job = next) {
        next = job->next;
        ps_op *op = (ps_op *)job;
        ps_key_slot *slot = op->slot;
        slot->running = NULL;
        s->ops_in_flight--;
        op->kind->finish(op);
        op_dispose(op);
        slot_dispatch(s, slot);
        slot_free_if_idle(s, slot);
    }
}

static void dispatch_waiting_slots(ps_service *s)
{
    ps_key_slot *list = s->waiting_slots;
    s->waiting_slots = NULL;
    while (list) {
        ps_key_slot *slot = list;
        list = slot->next_waiting;
        slot->in_waiting = 0;
        slot_dispatch(s, slot);
        slot_free_if_idle(s, slot);
    }
}

/* ---- timers -------------------------------------------------------------------- */

void ps__service_add_timer(ps_service *s, ps_timer *timer, double due)
{
    timer->due = due;
    timer->next = s->timers;
    s->timers = timer;
}

void ps__service_add_load_timer(ps_service *s, ps_load_request *request, double due)
{
    request->retry_at = due;
    request->next_timer = s->load_timers;
    s->load_timers = request;
}

void ps__store_retry_load(ps_load_request *request); /* store.c */

static void fire_due_timers(ps_service *s, double now)
{
    ps_timer *due = NULL, **link = &s->timers;
    while (*link) {
        ps_timer *t = *link;
        if (t->due <= now || (t->early_on_shutdown && atomic_load(&s->locked))) {
            *link = t->next;
            t->next = due;
            due = t;
        } else {
            link = &t->next;
        }
    }
    for (ps_timer *t = due, *next; t; t = next) {
        next = t->next;
        t->fire(t);
    }
}

static void fire_due_loads(ps_service *s, double now)
{
    ps_load_request *due = NULL, **link = &s->load_timers;
    while (*link) {
        ps_load_request *r = *link;
        if (r->retry_at <= now || (atomic_load(&s->locked) && !r->maybe_taken)) {
            *link = r->next_timer;
            r->next_timer = due;
            due = r;
        } else {
            link = &r->next_timer;
        }
    }
    for (ps_load_request *r = due, *next; r; r = next) {
        next = r->next_timer;
        ps__store_retry_load(r);
    }
}

/* Earliest due time of any timer, or a large number when none. */
static double next_due(const ps_service *s)
{
    double due = 1e300;
    for (const ps_timer *t = s->timers; t; t = t->next)
        if (t->due < due)
            due = t->due;
    for (const ps_load_request *r = s->load_timers; r; r = r->next_timer)
        if (r->retry_at < due)
            due = r->retry_at;
    for (const ps_key_slot *k = s->waiting_slots; k; k = k->next_waiting)
        if (k->last_start + s->config.write_cooldown < due)
            due = k->last_start + s->config.write_cooldown;
    return due;
}

/* ---- auto-save (SEMANTICS.md §5.1) --------------------------------------------- */

int ps__autosave_add(ps_service *s, ps_profile *p)
{
    if (s->autosave_count == s->autosave_cap) {
        size_t cap = s->autosave_cap ? s->autosave_cap * 2 : 64;
        ps_profile **a = realloc(s->autosave, cap * sizeof *a);
        if (!a)
            return ps__error_oom();
        s->autosave = a;
        s->autosave_cap = cap;
    }
    if (s->autosave_count == 0)
        s->autosave_last_tick = ps__service_mono_time(s);
    /* Insert at the cursor and move the cursor past it: visited last. */
    size_t at = s->autosave_cursor;
    memmove(&s->autosave[at + 1], &s->autosave[at],
            (s->autosave_count - at) * sizeof *s->autosave);
    s->autosave[at] = p;
    s->autosave_count++;
    for (size_t i = at; i < s->autosave_count; i++)
        s->autosave[i]->autosave_index = i;
    s->autosave_cursor = (at + 1) % s->autosave_count;
    p->in_autosave = 1;
    return PS_OK;
}

void ps__autosave_remove(ps_service *s, ps_profile *p)
{
    if (!p->in_autosave)
        return;
    size_t at = p->autosave_index;
    memmove(&s->autosave[at], &s->autosave[at + 1],
            (s->autosave_count - at - 1) * sizeof *s->autosave);
    s->autosave_count--;
    for (size_t i = at; i < s->autosave_count; i++)
        s->autosave[i]->autosave_index = i;
    if (s->autosave_cursor > at)
        s->autosave_cursor--;
    if (s->autosave_cursor >= s->autosave_count)
        s->autosave_cursor = 0;
    p->in_autosave = 0;
}

/* Picks the profile at the cursor, or the next one loaded a full period ago. */
static ps_profile *autosave_pick(ps_service *s, double now)
{
    size_t n = s->autosave_count;
    for (size_t i = 0; i < n; i++) {
        ps_profile *p = s->autosave[(s->autosave_cursor + i) % n];
        if (now - p->loaded_at >= s->config.auto_save_period) {
            s->autosave_cursor = (s->autosave_cursor + i + 1) % n;
            return p;
        }
    }
    s->autosave_cursor = (s->autosave_cursor + 1) % n;
    return NULL;
}

static void run_autosave(ps_service *s, double now)
{
    if (s->autosave_count == 0)
        return;
    double step = s->config.auto_save_period / (double)s->autosave_count;
    size_t budget = s->autosave_count;
    while (s->autosave_count > 0 && now - s->autosave_last_tick > step) {
        /* After a long stall save each profile at most once, not once per step. */
        if (budget-- == 0) {
            s->autosave_last_tick = now;
            break;
        }
        s->autosave_last_tick += step;
        ps_profile *p = autosave_pick(s, now);
        if (p)
            ps__profile_queue_save(p, 0);
    }
}

/* ---- the tick ------------------------------------------------------------------ */

int ps_service_update(ps_service *service)
{
    if (!service)
        return ps__error_set(PS_EINVAL, "service is NULL");
    if (service->in_update)
        return ps__error_set(PS_EINVAL, "ps_service_update called from inside a "
                                        "listener or handler");
    service->in_update = 1;
    double now = ps__service_mono_time(service);
    finish_done_ops(service);
    dispatch_waiting_slots(service);
    fire_due_loads(service, now);
    fire_due_timers(service, now);
    if (!atomic_load(&service->locked))
        run_autosave(service, now);
    update_critical_state(service, now);
    service->in_update = 0;
    return PS_OK;
}

int ps__service_check_can_block(ps_service *service)
{
    if (service->in_update)
        return ps__error_set(PS_EINVAL, "blocking call from inside a listener or "
                                        "handler; use the _async form");
    return PS_OK;
}

/* Ticks until *done. Waits on workers when some are busy, else sleeps (through the
 * injectable sleep, so virtual-clock tests never wait) until the next timer. */
int ps__service_run_until(ps_service *s, const int *done)
{
    for (;;) {
        ps_service_update(s);
        if (*done)
            return PS_OK;
        if (ps__pool_pending(s->pool) > 0) {
            ps__pool_wait(s->pool, 0.05);
            continue;
        }
        double wait = next_due(s) - ps__service_mono_time(s);
        if (wait > 1e299)
            wait = 0.001; /* nothing scheduled: an op is being dispatched */
        service_sleep(s, wait > 0 ? wait : 0);
    }
}

/* ---- shutdown and free --------------------------------------------------------- */

static int service_idle(ps_service *s)
{
    if (s->ops_in_flight > 0 || s->load_timers || s->timers || s->waiting_slots)
        return 0;
    for (size_t i = 0; i < s->store_count; i++)
        if (s->stores[i]->loading.count > 0)
            return 0;
    return 1;
}

static void release_all(ps_service *s)
{
    /* Releasing removes from the auto-save list, so take from its end. */
    while (s->autosave_count > 0) {
        ps_profile *p = s->autosave[s->autosave_count - 1];
        ps_profile_release(p);
        if (p->in_autosave) /* release refused: never loop forever */
            ps__autosave_remove(s, p);
    }
}

int ps_service_shutdown(ps_service *service)
{
    if (!service)
        return ps__error_set(PS_EINVAL, "service is NULL");
    int rc = ps__service_check_can_block(service);
    if (rc != PS_OK)
        return rc;
    if (service->shut_down)
        return PS_OK;
    atomic_store(&service->locked, 1);
    release_all(service);
    for (;;) {
        ps_service_update(service);
        if (service_idle(service))
            break;
        if (ps__pool_pending(service->pool) > 0)
            ps__pool_wait(service->pool, 0.05);
        else if (next_due(service) < 1e299)
            service_sleep(service, next_due(service) - ps__service_mono_time(service));
        else
            service_sleep(service, 0.001);
    }
    service->shut_down = 1;
    return PS_OK;
}

void ps__store_free(ps_profile_store *store); /* store.c */

static void free_slot(const char *id, void *value, void *userdata)
{
    (void)id;
    (void)userdata;
    ps_key_slot *slot = value;
    free(slot->id);
    free(slot);
}

void ps_service_free(ps_service *service)
{
    if (!service)
        return;
    if (!service->shut_down && !service->in_update)
        ps_service_shutdown(service);
    ps__pool_free(service->pool);
    while (service->profiles)
        ps__profile_detach(service->profiles);
    for (size_t i = 0; i < service->store_count; i++)
        ps__store_free(service->stores[i]);
    free(service->stores);
    ps__strmap_foreach(&service->slots, free_slot, NULL);
    ps__strmap_dispose(&service->slots);
    ps__signal_dispose(&service->issue_signal);
    ps__signal_dispose(&service->corruption_signal);
    ps__signal_dispose(&service->critical_state_signal);
    ps_backend_free(service->backend);
    free(service->autosave);
    free(service->issue_times);
    free(service->store_url);
    free(service->job_id);
    free(service->request_origin);
    pthread_mutex_destroy(&service->clock_lock);
    free(service);
}
