/*
 * store.c — ProfileStore: GetProfileStore, LoadProfileAsync (the load loop with the
 * not_released handler, force load and steal, SEMANTICS.md §4) and ViewProfileAsync.
 */
#include "service.h"

#include "document.h"
#include "error.h"
#include "profile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- GetProfileStore ------------------------------------------------------------ */

int ps_service_get_profile_store(ps_profile_store **out, ps_service *service,
                                 const char *name, const json_t *profile_template)
{
    if (!out || !service)
        return ps__error_set(PS_EINVAL, "out and service are required");
    *out = NULL;
    int rc = ps__check_name("profile store name", name);
    if (rc != PS_OK)
        return rc;
    if (!json_is_object(profile_template))
        return ps__error_set(PS_EINVAL, "profile template for store \"%s\" must be a JSON "
                                        "object", name);
    if (atomic_load(&service->locked))
        return ps__error_set(PS_ESHUTDOWN, "service is shutting down");
    for (size_t i = 0; i < service->store_count; i++) {
        ps_profile_store *s = service->stores[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if (!json_equal(s->template_, (json_t *)profile_template))
            return ps__error_set(PS_EINVAL, "profile store \"%s\" already exists with a "
                                            "different template", name);
        *out = s;
        return PS_OK;
    }
    ps_profile_store **stores =
        realloc(service->stores, (service->store_count + 1) * sizeof *stores);
    if (!stores)
        return ps__error_oom();
    service->stores = stores;
    ps_profile_store *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name)) ||
        !(s->template_ = json_deep_copy(profile_template))) {
        if (s)
            free(s->name);
        free(s);
        return ps__error_oom();
    }
    s->service = service;
    service->stores[service->store_count++] = s;
    *out = s;
    return PS_OK;
}

const char *ps_store_name(const ps_profile_store *store)
{
    return store ? store->name : NULL;
}

void ps__store_free(ps_profile_store *store)
{
    ps__strmap_dispose(&store->active);
    ps__strmap_dispose(&store->loading);
    json_decref(store->template_);
    free(store->name);
    free(store);
}

/* ---- the load transform (worker) ------------------------------------------------ */

typedef struct load_op {
    ps_op base;
    ps_load_request *request;
    int request_force_load, steal, aggressive; /* inputs, fixed at creation */
    json_t *result;                            /* the document as written */
    ps_doc_report report;
} load_op;

/* Load's Missing hook: whatever a new or repaired document lacks. */
static int fill_missing(json_t *doc, const json_t *template_, double now, int *created)
{
    *created = 0;
    if (!json_object_get(doc, "Data") &&
        json_object_set_new(doc, "Data", json_deep_copy(template_)) != 0)
        return ps__error_oom();
    if (!json_object_get(doc, "MetaData")) {
        json_t *meta = json_object();
        if (!meta || ps__meta_fill_new(meta, now) != PS_OK ||
            json_object_set_new(doc, "MetaData", meta) != 0)
            return ps__error_oom();
        *created = 1;
    }
    if (!json_object_get(doc, "GlobalUpdates") &&
        json_object_set_new(doc, "GlobalUpdates", json_pack("[i[]]", 0)) != 0)
        return ps__error_oom();
    return PS_OK;
}

static int set_me(json_t *meta, const char *field, const ps_service *s)
{
    json_t *tag = ps__session_tag_new(s->config.place_id, s->job_id);
    return json_object_set_new(meta, field, tag) == 0 ? PS_OK : ps__error_oom();
}

/* Load's Existing hook: the session table of SEMANTICS.md §4.3. */
static int take_session(json_t *meta, const load_op *op, double now)
{
    const ps_service *s = op->base.service;
    json_t *as = json_object_get(meta, "ActiveSession");
    json_t *fls = json_object_get(meta, "ForceLoadSession");
    int64_t place = s->config.place_id;
    int me_fls = ps__session_tag_is(fls, place, s->job_id);
    json_t *last = json_object_get(meta, "LastUpdate");
    /* Dead: LastUpdate further than assume_dead_session_lock from now, on either
     * side. Far in the future means a clock gone wrong, and must not hold the lock
     * forever (README "Clocks"). */
    int dead = json_is_number(last) &&
               fabs(now - json_number_value(last)) > s->config.assume_dead_session_lock;
    int take = !as || ps__session_tag_is(as, place, s->job_id) || dead ||
               op->aggressive || (op->steal && me_fls);
    if (take) {
        json_object_del(meta, "ForceLoadSession");
        return set_me(meta, "ActiveSession", s);
    }
    if (op->request_force_load && !op->steal)
        return set_me(meta, "ForceLoadSession", s);
    return PS_OK;
}

static int load_transform_doc(json_t *doc, load_op *op)
{
    ps_service *s = op->base.service;
    double now = ps__service_wall_time(s);
    int locked = atomic_load(&s->locked), created;
    int rc = fill_missing(doc, op->base.store->template_, now, &created);
    if (rc != PS_OK)
        return rc;
    json_t *meta = json_object_get(doc, "MetaData");
    /* While ServiceLocked, no session is taken, not even of a brand-new profile. */
    if (!locked)
        rc = created ? set_me(meta, "ActiveSession", s) : take_session(meta, op, now);
    if (rc != PS_OK)
        return rc;
    if (ps__session_tag_is(json_object_get(meta, "ActiveSession"), s->config.place_id,
                           s->job_id)) {
        int64_t count = 0;
        ps__json_get_int(json_object_get(meta, "SessionLoadCount"), &count);
        if (json_object_set_new(meta, "SessionLoadCount", json_integer(count + 1)) ||
            json_object_set_new(meta, "LastUpdate", json_integer((json_int_t)floor(now))))
            return ps__error_oom();
    }
    return PS_OK;
}

/* Marks a repair, or a normal rewrite of an existing document (SEMANTICS.md §2). */
int ps__doc_mark_written(json_t *doc, ps_write *out, const ps_doc_report *report)
{
    if (report->bad) {
        out->quarantine = 1;
        snprintf(out->reason, sizeof out->reason, "%s", report->what);
    }
    if (report->bad || report->kind == PS_DOC_EXISTING)
        return json_object_set_new(doc, "WasCorrupted", json_boolean(report->bad != 0))
                   ? ps__error_oom()
                   : PS_OK;
    return PS_OK;
}

int ps__doc_write(ps_write *out, json_t *doc, const ps_doc_report *report,
                  size_t max_size)
{
    int rc = ps__doc_mark_written(doc, out, report);
    if (rc == PS_OK)
        rc = ps__document_encode(&out->doc.data, &out->doc.len, doc, max_size);
    return rc;
}

static int load_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    load_op *op = userdata;
    json_decref(op->result);
    op->result = NULL;
    json_t *doc = NULL;
    int rc = ps__document_decode(&doc, &op->report, current ? current->data : NULL,
                                 current ? current->len : 0);
    if (rc == PS_OK)
        rc = load_transform_doc(doc, op);
    if (rc == PS_OK)
        rc = ps__doc_write(out, doc, &op->report, op->base.service->config.max_document_size);
    if (rc == PS_OK)
        op->result = doc;
    else
        json_decref(doc);
    return rc;
}

static void load_run(ps_op *base)
{
    ps__op_update(base, load_transform);
}

/* ---- the load loop (host) ------------------------------------------------------- */

static void load_finish(ps_op *base);
static void load_dispose(ps_op *base)
{
    load_op *op = (load_op *)base;
    json_decref(op->result);
    free(base->key);
    free(op);
}

static const ps_op_kind load_kind = {"load", NULL, load_run, load_finish, load_dispose};

static void request_free(ps_load_request *r)
{
    while (r->waiters) {
        ps_load_waiter *w = r->waiters;
        r->waiters = w->next;
        free(w);
    }
    free(r->key);
    free(r);
}

/* Ends the request: the newest waiter gets (status, profile), older ones
 * PS_ECANCELLED (a newer load of the same key took over). */
static void request_deliver(ps_load_request *r, int status, ps_profile *profile)
{
    ps_service *s = r->store->service;
    ps__strmap_remove(&r->store->loading, r->key);
    s->in_update++;
    for (ps_load_waiter *w = r->waiters; w; w = w->next) {
        if (w == r->waiters) {
            w->done(status, profile, w->userdata);
        } else {
            ps__error_set(PS_ECANCELLED, "a newer load of profile \"%s\" took over",
                          r->key);
            w->done(PS_ECANCELLED, NULL, w->userdata);
        }
    }
    s->in_update--;
    request_free(r);
}

static void request_submit(ps_load_request *r)
{
    load_op *op = (load_op *)ps__op_new(sizeof *op, &load_kind, r->store, r->key);
    if (!op) {
        ps__error_oom();
        request_deliver(r, PS_ENOMEM, NULL);
        return;
    }
    op->request = r;
    op->request_force_load = r->mode == LOAD_FORCE && r->request_force_load;
    op->steal = r->steal;
    op->aggressive = r->mode == LOAD_STEAL;
    ps__service_enqueue(r->store->service, &op->base);
}

void ps__store_retry_load(ps_load_request *r)
{
    /* Shutting down, we take no session; but an attempt whose reply was lost may have
     * taken one, so one more attempt looks, and load_taken gives it back. */
    if (atomic_load(&r->store->service->locked) && !r->maybe_taken) {
        ps__error_set(PS_ESHUTDOWN, "service is shutting down");
        request_deliver(r, PS_ESHUTDOWN, NULL);
        return;
    }
    request_submit(r);
}

static void retry_later(ps_load_request *r)
{
    ps_service *s = r->store->service;
    ps__service_add_load_timer(s, r, ps__service_mono_time(s) + s->config.load_repeat_delay);
}

/* We hold the session: build the profile and hand it over. */
static void load_taken(ps_load_request *r, const json_t *doc)
{
    ps_service *s = r->store->service;
    ps_profile *p = NULL;
    int rc = ps__profile_new_loaded(&p, r->store, r->key, doc);
    if (rc != PS_OK) {
        request_deliver(r, rc, NULL);
        return;
    }
    if (atomic_load(&s->locked)) {
        /* Shutdown began while we loaded: give the session back at once. */
        ps_profile_release(p);
        ps_profile_free(p);
        ps__error_set(PS_ESHUTDOWN, "service is shutting down");
        request_deliver(r, PS_ESHUTDOWN, NULL);
        return;
    }
    request_deliver(r, PS_OK, p);
}

/* Another session holds it: ForceLoad bookkeeping or ask the handler. */
static void load_conflict(ps_load_request *r, const json_t *meta, int first_force)
{
    int64_t place = 0;
    const char *job = "";
    ps__session_tag_get(json_object_get(meta, "ActiveSession"), &place, &job);
    ps_service *s = r->store->service;
    if (r->mode == LOAD_STEAL) {
        request_submit(r);
        return;
    }
    if (r->mode == LOAD_FORCE) {
        json_t *fls = json_object_get(meta, "ForceLoadSession");
        if (!ps__session_tag_is(fls, s->config.place_id, s->job_id)) {
            ps__error_set(PS_ECONFLICT, "profile \"%s\" is being force-loaded by another "
                                        "server", r->key);
            request_deliver(r, PS_ECONFLICT, NULL);
            return;
        }
        if (!first_force && ++r->steps >= s->config.force_load_max_steps)
            r->steal = 1;
        r->request_force_load = 0;
        retry_later(r);
        return;
    }
    ps_load_waiter *w = r->waiters;
    s->in_update++;
    ps_not_released_action action = w->handler(place, job, w->userdata);
    s->in_update--;
    switch (action) {
    case PS_REPEAT: retry_later(r); break;
    case PS_CANCEL:
        ps__error_set(PS_ECANCELLED, "not_released handler cancelled loading \"%s\"",
                      r->key);
        request_deliver(r, PS_ECANCELLED, NULL);
        break;
    case PS_FORCE_LOAD:
        r->mode = LOAD_FORCE;
        r->request_force_load = 1;
        request_submit(r);
        break;
    case PS_STEAL:
        r->mode = LOAD_STEAL;
        request_submit(r);
        break;
    default:
        ps__error_set(PS_EINVAL, "not_released handler returned %d; expected Repeat, "
                                 "Cancel, ForceLoad or Steal", (int)action);
        request_deliver(r, PS_EINVAL, NULL);
    }
}

static int load_error_is_transient(int status)
{
    return status == PS_EBACKEND || status == PS_ECONFLICT || status == PS_ENOMEM;
}

static void load_finish(ps_op *base)
{
    load_op *op = (load_op *)base;
    ps_load_request *r = op->request;
    ps_service *s = base->service;
    r->maybe_taken = base->status == PS_EBACKEND; /* it may have written */
    if (base->status != PS_OK) {
        ps__service_issue(s, base->message, base->store->name, base->key);
        if (!load_error_is_transient(base->status)) {
            ps__error_set(base->status, "%s", base->message);
            request_deliver(r, base->status, NULL);
        } else if (atomic_load(&s->locked) && !r->maybe_taken) {
            ps__store_retry_load(r);
        } else {
            retry_later(r);
        }
        return;
    }
    if (op->report.bad)
        ps__service_corruption(s, base->store->name, base->key);
    json_t *meta = json_object_get(op->result, "MetaData");
    json_t *as = json_object_get(meta, "ActiveSession");
    if (ps__session_tag_is(as, s->config.place_id, s->job_id))
        load_taken(r, op->result);
    else if (as && !atomic_load(&s->locked))
        load_conflict(r, meta, op->request_force_load);
    else {
        ps__error_set(PS_ESHUTDOWN, "service is shutting down");
        request_deliver(r, PS_ESHUTDOWN, NULL);
    }
}

/* ---- LoadProfileAsync ----------------------------------------------------------- */

static int check_store_call(ps_profile_store *store, const char *key)
{
    if (!store)
        return ps__error_set(PS_EINVAL, "profile store is NULL");
    int rc = ps__check_name("profile key", key);
    if (rc != PS_OK)
        return rc;
    if (atomic_load(&store->service->locked))
        return ps__error_set(PS_ESHUTDOWN, "service is shutting down");
    return PS_OK;
}

int ps_store_load_profile_async(ps_profile_store *store, const char *key,
                                ps_not_released_fn handler, ps_profile_done_fn done,
                                void *userdata)
{
    int rc = check_store_call(store, key);
    if (rc != PS_OK)
        return rc;
    if (!done)
        return ps__error_set(PS_EINVAL, "done callback is NULL");
    if (ps__strmap_get(&store->active, key))
        return ps__error_set(PS_ELOCKED, "profile \"%s\" of store \"%s\" is already "
                                         "loaded in this service", key, store->name);
    ps_load_waiter *w = calloc(1, sizeof *w);
    if (!w)
        return ps__error_oom();
    *w = (ps_load_waiter){NULL, done, handler, userdata};
    ps_load_request *r = ps__strmap_get(&store->loading, key);
    if (r) { /* join the running load: the newest caller gets the result */
        w->next = r->waiters;
        r->waiters = w;
        return PS_OK;
    }
    r = calloc(1, sizeof *r);
    if (!r || !(r->key = strdup(key)) ||
        ps__strmap_set(&store->loading, key, r) != PS_OK) {
        free(r ? r->key : NULL);
        free(r);
        free(w);
        return ps__error_oom();
    }
    r->store = store;
    r->waiters = w;
    r->mode = handler ? LOAD_HANDLER : LOAD_FORCE;
    r->request_force_load = handler == NULL;
    request_submit(r);
    return PS_OK;
}

typedef struct blocking_result {
    int done;
    int status;
    ps_profile *profile;
    char message[320];
} blocking_result;

static void blocking_done(int status, ps_profile *profile, void *userdata)
{
    blocking_result *b = userdata;
    b->done = 1;
    b->status = status;
    b->profile = profile;
    if (status != PS_OK)
        ps__error_copy(b->message, sizeof b->message);
}

/* Handler + userdata of the caller, wrapped with the blocking result. */
typedef struct blocking_load {
    blocking_result result;
    ps_not_released_fn handler;
    void *userdata;
} blocking_load;

static ps_not_released_action blocking_handler(int64_t place_id, const char *job_id,
                                               void *userdata)
{
    blocking_load *b = userdata;
    return b->handler(place_id, job_id, b->userdata);
}

static int blocking_finish(ps_profile **out, ps_service *s, blocking_result *b)
{
    ps__service_run_until(s, &b->done);
    *out = b->profile;
    if (b->status != PS_OK)
        return ps__error_set(b->status, "%s", b->message);
    return PS_OK;
}

int ps_store_load_profile(ps_profile **out, ps_profile_store *store, const char *key,
                          ps_not_released_fn handler, void *userdata)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "out is NULL");
    *out = NULL;
    if (store && ps__service_check_can_block(store->service) != PS_OK)
        return PS_EINVAL;
    blocking_load b = {{0, 0, NULL, ""}, handler, userdata};
    int rc = ps_store_load_profile_async(store, key, handler ? blocking_handler : NULL,
                                         blocking_done, &b);
    if (rc != PS_OK)
        return rc;
    return blocking_finish(out, store->service, &b.result);
}

/* ---- ViewProfileAsync ----------------------------------------------------------- */

typedef struct view_op {
    ps_op base;
    ps_profile_done_fn done;
    void *userdata;
    int found;
    json_t *doc;
    ps_doc_report report;
} view_op;

static void view_run(ps_op *base)
{
    view_op *op = (view_op *)base;
    ps_backend *b = base->service->backend;
    ps_bytes bytes = {NULL, 0};
    int rc = b->get(&bytes, b, base->store->name, base->key);
    if (rc == PS_ENOTFOUND) {
        op->found = 0;
        return;
    }
    if (rc == PS_OK)
        rc = ps__document_decode(&op->doc, &op->report, bytes.data, bytes.len);
    ps_bytes_dispose(&bytes);
    if (rc != PS_OK)
        ps__op_fail(base, rc);
    else
        op->found = 1;
}

static void view_finish(ps_op *base);
static void view_dispose(ps_op *base)
{
    view_op *op = (view_op *)base;
    json_decref(op->doc);
    free(base->key);
    free(op);
}

static const ps_op_kind view_kind = {"view", NULL, view_run, view_finish, view_dispose};

static int view_submit(ps_profile_store *store, const char *key, ps_profile_done_fn done,
                       void *userdata)
{
    view_op *op = (view_op *)ps__op_new(sizeof *op, &view_kind, store, key);
    if (!op)
        return ps__error_oom();
    op->done = done;
    op->userdata = userdata;
    ps__service_enqueue(store->service, &op->base);
    return PS_OK;
}

static void view_deliver(view_op *op, int status, ps_profile *profile)
{
    op->base.service->in_update++;
    op->done(status, profile, op->userdata);
    op->base.service->in_update--;
}

static void view_finish(ps_op *base)
{
    view_op *op = (view_op *)base;
    ps_service *s = base->service;
    if (base->status != PS_OK) {
        ps__service_issue(s, base->message, base->store->name, base->key);
        /* ViewProfileAsync retries until it succeeds or the service locks. */
        int rc = atomic_load(&s->locked)
                     ? ps__error_set(PS_ESHUTDOWN, "service is shutting down")
                     : view_submit(base->store, base->key, op->done, op->userdata);
        if (rc != PS_OK)
            view_deliver(op, rc, NULL);
        return;
    }
    if (op->found && op->report.bad)
        ps__service_corruption(s, base->store->name, base->key);
    ps_profile *p = NULL;
    int rc = ps__profile_new_view(&p, base->store, base->key, op->found ? op->doc : NULL);
    view_deliver(op, rc, p);
}

int ps_store_view_profile_async(ps_profile_store *store, const char *key,
                                ps_profile_done_fn done, void *userdata)
{
    int rc = check_store_call(store, key);
    if (rc != PS_OK)
        return rc;
    if (!done)
        return ps__error_set(PS_EINVAL, "done callback is NULL");
    return view_submit(store, key, done, userdata);
}

int ps_store_view_profile(ps_profile **out, ps_profile_store *store, const char *key)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "out is NULL");
    *out = NULL;
    if (store && ps__service_check_can_block(store->service) != PS_OK)
        return PS_EINVAL;
    blocking_result b = {0, 0, NULL, ""};
    int rc = ps_store_view_profile_async(store, key, blocking_done, &b);
    if (rc != PS_OK)
        return rc;
    return blocking_finish(out, store->service, &b);
}
