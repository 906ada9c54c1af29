/*
 * profile.c — Profile: accessors, meta tags, ListenToRelease, Release, Save and the
 * save transform with its SessionLoadCount fence (SEMANTICS.md §5-§6).
 */
#include "profile.h"

#include "error.h"
#include "global_updates.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The MetaData keys refreshed from the store after every save (§1.1). */
static const char *const refreshed_meta_keys[] = {
    "ProfileCreateTime", "SessionLoadCount", "ActiveSession", "ForceLoadSession",
    "LastUpdate"};

int ps__meta_fill_new(json_t *meta, double now)
{
    if (json_object_set_new(meta, "ProfileCreateTime", json_integer((json_int_t)floor(now))) ||
        json_object_set_new(meta, "SessionLoadCount", json_integer(0)) ||
        json_object_set_new(meta, "MetaTags", json_object()))
        return ps__error_oom();
    return PS_OK;
}

/* ---- construction --------------------------------------------------------------- */

static ps_profile *profile_alloc(ps_profile_store *store, const char *key)
{
    ps_profile *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->key = strdup(key);
    if (!p->key) {
        free(p);
        return NULL;
    }
    p->refs = 1;
    p->store = store;
    p->service = store->service;
    ps__signal_init(&p->release_signal);
    ps_service *s = store->service;
    p->next_live = s->profiles;
    if (s->profiles)
        s->profiles->prev_live = p;
    s->profiles = p;
    return p;
}

/* Local MetaData: a copy of the stored one plus MetaTagsLatest; MetaTags is shared
 * with p->meta_tags so set_meta_tag shows through. */
static int profile_take_meta(ps_profile *p, const json_t *stored_meta)
{
    p->meta = json_deep_copy(stored_meta);
    if (!p->meta)
        return ps__error_oom();
    p->meta_tags = json_object_get(p->meta, "MetaTags");
    if (!json_is_object(p->meta_tags)) {
        p->meta_tags = json_object();
        json_object_set_new(p->meta, "MetaTags", p->meta_tags);
    }
    json_t *latest = json_deep_copy(p->meta_tags);
    if (!latest || json_object_set_new(p->meta, "MetaTagsLatest", latest))
        return ps__error_oom();
    ps__json_get_int(json_object_get(p->meta, "SessionLoadCount"), &p->load_count);
    return PS_OK;
}

int ps__profile_new_loaded(ps_profile **out, ps_profile_store *store, const char *key,
                           const json_t *doc)
{
    ps_service *s = store->service;
    ps_profile *p = profile_alloc(store, key);
    if (!p)
        return ps__error_oom();
    p->data = json_incref(json_object_get(doc, "Data"));
    p->loaded_at = ps__service_mono_time(s);
    int rc = profile_take_meta(p, json_object_get(doc, "MetaData"));
    if (rc == PS_OK)
        rc = ps__global_updates_new_owned(&p->global_updates, p,
                                          json_object_get(doc, "GlobalUpdates"));
    if (rc == PS_OK)
        rc = ps__strmap_set(&store->active, key, p);
    if (rc == PS_OK && (rc = ps__autosave_add(s, p)) != PS_OK)
        ps__strmap_remove(&store->active, key);
    if (rc != PS_OK) {
        ps__profile_unref(p);
        return rc;
    }
    p->active = 1;
    p->refs++; /* the service's reference while active */
    *out = p;
    return PS_OK;
}

int ps__profile_new_view(ps_profile **out, ps_profile_store *store, const char *key,
                         const json_t *doc)
{
    ps_profile *p = profile_alloc(store, key);
    if (!p)
        return ps__error_oom();
    p->is_view = 1;
    json_t *meta = json_object_get(doc, "MetaData");
    int rc = PS_OK;
    /* A never-created key (or a gift-only document) has no Data and no MetaData, as
     * the seed says; a repaired existing one gets the template where Data was bad. */
    if (meta) {
        json_t *data = json_object_get(doc, "Data");
        p->data = data ? json_incref(data) : json_deep_copy(store->template_);
        rc = p->data ? profile_take_meta(p, meta) : ps__error_oom();
    }
    if (rc == PS_OK)
        rc = ps__global_updates_new_view(&p->global_updates, p,
                                         json_object_get(doc, "GlobalUpdates"));
    if (rc != PS_OK) {
        ps__profile_unref(p);
        return rc;
    }
    *out = p;
    return PS_OK;
}

void ps__profile_ref(ps_profile *p)
{
    p->refs++;
}

static void profile_destroy(ps_profile *p)
{
    if (p->service) {
        if (p->prev_live)
            p->prev_live->next_live = p->next_live;
        else
            p->service->profiles = p->next_live;
        if (p->next_live)
            p->next_live->prev_live = p->prev_live;
    }
    ps__signal_dispose(&p->release_signal);
    ps__global_updates_free(p->global_updates);
    json_decref(p->data);
    json_decref(p->meta);
    free(p->released_job);
    free(p->key);
    free(p);
}

void ps__profile_unref(ps_profile *p)
{
    if (p && --p->refs == 0)
        profile_destroy(p);
}

void ps_profile_free(ps_profile *profile)
{
    if (!profile || profile->handle_freed)
        return;
    profile->handle_freed = 1;
    ps__profile_unref(profile);
}

/* The service dies first: the caller's handle stays readable but inert. */
void ps__profile_detach(ps_profile *p)
{
    ps_service *s = p->service;
    s->profiles = p->next_live;
    if (s->profiles)
        s->profiles->prev_live = NULL;
    p->next_live = p->prev_live = NULL;
    p->service = NULL;
    p->store = NULL;
    p->active = 0;
    p->in_autosave = 0;
    int service_refs = p->refs - (p->handle_freed ? 0 : 1);
    p->refs -= service_refs;
    if (p->refs == 0)
        profile_destroy(p);
}

/* ---- accessors ------------------------------------------------------------------ */

json_t *ps_profile_data(ps_profile *profile)
{
    return profile ? profile->data : NULL;
}

const json_t *ps_profile_meta_data(ps_profile *profile)
{
    return profile ? profile->meta : NULL;
}

double ps_profile_create_time(const ps_profile *profile)
{
    json_t *t = profile ? json_object_get(profile->meta, "ProfileCreateTime") : NULL;
    return json_is_number(t) ? json_number_value(t) : 0;
}

int64_t ps_profile_session_load_count(const ps_profile *profile)
{
    int64_t n = 0;
    if (profile)
        ps__json_get_int(json_object_get(profile->meta, "SessionLoadCount"), &n);
    return n;
}

int ps_profile_active_session(const ps_profile *profile, int64_t *place_id,
                              const char **job_id)
{
    int64_t place;
    const char *job;
    if (!profile ||
        !ps__session_tag_get(json_object_get(profile->meta, "ActiveSession"), &place, &job))
        return 0;
    if (place_id)
        *place_id = place;
    if (job_id)
        *job_id = job;
    return 1;
}

const json_t *ps_profile_meta_tags(const ps_profile *profile)
{
    return profile ? profile->meta_tags : NULL;
}

const json_t *ps_profile_meta_tags_latest(const ps_profile *profile)
{
    return profile ? json_object_get(profile->meta, "MetaTagsLatest") : NULL;
}

const char *ps_profile_key(const ps_profile *profile)
{
    return profile ? profile->key : NULL;
}

ps_profile_store *ps_profile_store_of(const ps_profile *profile)
{
    return profile ? profile->store : NULL;
}

int ps_profile_is_active(const ps_profile *profile)
{
    return profile ? profile->active : 0;
}

/* ---- meta tags ------------------------------------------------------------------ */

json_t *ps_profile_get_meta_tag(const ps_profile *profile, const char *tag_name)
{
    if (!profile) {
        ps__error_set(PS_EINVAL, "profile is NULL");
        return NULL;
    }
    if (!tag_name || !*tag_name || !ps__utf8_name_ok(tag_name, 1 << 20)) {
        ps__error_set(PS_EINVAL, "meta tag name must be a non-empty UTF-8 string");
        return NULL;
    }
    return json_object_get(profile->meta_tags, tag_name);
}

static int check_writable(const ps_profile *p)
{
    if (!p)
        return ps__error_set(PS_EINVAL, "profile is NULL");
    if (p->is_view)
        return ps__error_set(PS_EVIEW, "profile \"%s\" is a view; it cannot be written",
                             p->key);
    if (!p->active)
        return ps__error_set(PS_ERELEASED, "profile \"%s\" is no longer active", p->key);
    return PS_OK;
}

int ps_profile_set_meta_tag_new(ps_profile *profile, const char *tag_name, json_t *value)
{
    int rc = check_writable(profile);
    if (rc == PS_OK && (!tag_name || !*tag_name || !ps__utf8_name_ok(tag_name, 1 << 20)))
        rc = ps__error_set(PS_EINVAL, "meta tag name must be a non-empty UTF-8 string");
    if (rc == PS_OK && !value)
        rc = ps__error_set(PS_EINVAL, "meta tag \"%s\" value is NULL", tag_name);
    if (rc != PS_OK) {
        json_decref(value);
        return rc;
    }
    if (json_object_set_new(profile->meta_tags, tag_name, value))
        return ps__error_oom();
    return PS_OK;
}

int ps_profile_set_meta_tag(ps_profile *profile, const char *tag_name, json_t *value)
{
    return ps_profile_set_meta_tag_new(profile, tag_name, json_incref(value));
}

/* ---- release -------------------------------------------------------------------- */

typedef struct release_args {
    ps_profile *profile;
    int64_t place;
    const char *job;
} release_args;

static void invoke_release(ps_connection *c, void *args)
{
    release_args *a = args;
    ((ps_release_fn)c->fn)(a->profile, a->place, a->job, c->userdata);
}

int ps_profile_listen_to_release(ps_connection **out, ps_profile *profile,
                                 ps_release_fn fn, void *userdata,
                                 void (*free_userdata)(void *userdata))
{
    if (!profile || !fn)
        return ps__error_set(PS_EINVAL, "profile and listener are required");
    if (profile->is_view)
        return ps__error_set(PS_EVIEW, "view profiles are never released");
    int rc = ps__signal_connect(out ? out : &(ps_connection *){NULL},
                                &profile->release_signal, (ps_generic_fn)fn, userdata,
                                free_userdata);
    if (rc == PS_OK && profile->released) {
        /* Already released: ProfileService calls the listener at once. */
        fn(profile, profile->released_place, profile->released_job, userdata);
    }
    return rc;
}

void ps__profile_release_locally(ps_profile *p, int64_t place_id, const char *job_id)
{
    if (!p->active)
        return;
    ps_service *s = p->service;
    p->active = 0;
    ps__strmap_remove(&p->store->active, p->key);
    ps__autosave_remove(s, p);
    p->released = 1;
    p->released_place = place_id;
    p->released_job = job_id ? strdup(job_id) : NULL;
    release_args a = {p, place_id, p->released_job};
    p->refs++; /* a listener may free the caller's handle */
    s->in_update++;
    ps__signal_emit(&p->release_signal, invoke_release, &a);
    s->in_update--;
    ps__profile_unref(p); /* the service's active reference */
    ps__profile_unref(p);
}

int ps_profile_release(ps_profile *profile)
{
    if (!profile)
        return ps__error_set(PS_EINVAL, "profile is NULL");
    if (profile->is_view)
        return ps__error_set(PS_EVIEW, "view profiles cannot be released");
    if (!profile->active)
        return PS_OK;
    ps_service *s = profile->service;
    profile->release_pending = 1;
    profile->refs++; /* keep it alive across the listeners */
    ps__profile_release_locally(profile, s->config.place_id, s->job_id);
    int rc = ps__profile_queue_save(profile, 1);
    ps__profile_unref(profile);
    return rc;
}

/* ---- save ----------------------------------------------------------------------- */

typedef struct save_op {
    ps_op base;
    ps_profile *profile;      /* a reference */
    int releasing;
    json_t *data, *meta_tags; /* snapshots taken on the host at dispatch */
    ps_gu_pending pending;    /* locks and clears to apply */
    int64_t expected_count;
    json_t *result;           /* the stored document after the call */
    int wrote;
    int data_dropped;         /* release: Data over the limit, session released alone */
    ps_doc_report report;
} save_op;

static void save_finish(ps_op *base);
static void save_run(ps_op *base);
static void schedule_release_retry(struct save_op *op);

static int save_prepare(ps_op *base)
{
    save_op *op = (save_op *)base;
    ps_profile *p = op->profile;
    if (!op->releasing) {
        p->save_queued = 0;
        if (!p->active)
            return 1; /* released since: the release save covers it */
    }
    p->in_before_save = 1;
    int refused = p->before_save && p->before_save(p, p->before_save_userdata) != 0;
    p->in_before_save = 0;
    if (refused) {
        char message[400];
        snprintf(message, sizeof message, "save refused: %s", ps_error_last()->message);
        ps__service_issue(base->service, message, base->store->name, base->key);
        if (op->releasing)
            schedule_release_retry(op);
        return 1;
    }
    if (!json_is_object(p->data)) {
        ps__service_corruption(base->service, base->store->name, base->key);
        ps__service_issue(base->service, "profile Data is not a JSON object; save "
                                         "refused", base->store->name, base->key);
        if (op->releasing)
            schedule_release_retry(op);
        return 1;
    }
    op->data = json_deep_copy(p->data);
    op->meta_tags = json_deep_copy(p->meta_tags);
    op->expected_count = p->load_count;
    if (!op->data || !op->meta_tags ||
        ps__global_updates_snapshot(&op->pending, p->global_updates) != PS_OK) {
        ps__service_issue(base->service, "out of memory taking a save snapshot",
                          base->store->name, base->key);
        if (op->releasing)
            schedule_release_retry(op);
        return 1;
    }
    return 0;
}

static void save_dispose(ps_op *base)
{
    save_op *op = (save_op *)base;
    json_decref(op->data);
    json_decref(op->meta_tags);
    json_decref(op->result);
    ps__gu_pending_dispose(&op->pending);
    ps__profile_unref(op->profile);
    free(base->key);
    free(op);
}

static const ps_op_kind save_kind = {"save", save_prepare, save_run, save_finish,
                                     save_dispose};

/* Our session owns the stored document iff ActiveSession is us and SessionLoadCount
 * is the one our load wrote: an older session's late save can never land. */
static int owns_doc(const save_op *op, const json_t *doc)
{
    const ps_service *s = op->base.service;
    json_t *meta = json_object_get(doc, "MetaData");
    int64_t count = -1;
    return ps__session_tag_is(json_object_get(meta, "ActiveSession"), s->config.place_id,
                              s->job_id) &&
           ps__json_get_int(json_object_get(meta, "SessionLoadCount"), &count) &&
           count == op->expected_count;
}

static int save_edit(save_op *op, json_t *doc)
{
    ps_service *s = op->base.service;
    json_t *meta = json_object_get(doc, "MetaData");
    json_t *fls = json_object_get(meta, "ForceLoadSession");
    int handover = fls && !ps__session_tag_is(fls, s->config.place_id, s->job_id);
    double now = ps__service_wall_time(s);
    if (ps__gu_apply_pending(doc, &op->pending) != PS_OK ||
        json_object_set(doc, "Data", op->data) ||
        json_object_set(meta, "MetaTags", op->meta_tags) ||
        json_object_set_new(meta, "LastUpdate", json_integer((json_int_t)floor(now))))
        return ps__error_oom();
    if (op->releasing || handover)
        json_object_del(meta, "ActiveSession");
    return PS_OK;
}

/* A final save whose Data cannot be stored still gives the session back: the stored
 * Data stays as it was (the last save that fit) and only ActiveSession goes. */
static int release_keeping_stored_data(ps_write *out, const ps_bytes *current,
                                       save_op *op, json_t **doc)
{
    json_decref(*doc);
    int rc = ps__document_decode(doc, &op->report, current->data, current->len);
    if (rc != PS_OK)
        return rc;
    json_object_del(json_object_get(*doc, "MetaData"), "ActiveSession");
    ps_bytes_dispose(&out->doc);
    /* No limit: these bytes are already stored. */
    rc = ps__doc_write(out, *doc, &op->report, 0);
    op->data_dropped = rc == PS_OK;
    return rc;
}

static int save_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    save_op *op = userdata;
    json_decref(op->result);
    op->result = NULL;
    op->wrote = 0;
    op->data_dropped = 0;
    json_t *doc = NULL;
    int rc = ps__document_decode(&doc, &op->report, current ? current->data : NULL,
                                 current ? current->len : 0);
    if (rc != PS_OK)
        return rc;
    if (op->report.kind == PS_DOC_EXISTING && owns_doc(op, doc)) {
        rc = save_edit(op, doc);
        if (rc == PS_OK)
            rc = ps__doc_write(out, doc, &op->report,
                               op->base.service->config.max_document_size);
        if (rc == PS_ETOOBIG && op->releasing)
            rc = release_keeping_stored_data(out, current, op, &doc);
        op->wrote = rc == PS_OK;
    } /* else: the session is lost; write nothing */
    if (rc == PS_OK)
        op->result = doc;
    else
        json_decref(doc);
    return rc;
}

static void save_run(ps_op *base)
{
    ps__op_update(base, save_transform);
}

/* Release saves are retried until they succeed (latest ProfileService). */
typedef struct release_retry {
    ps_timer timer;
    ps_profile *profile;
} release_retry;

static save_op *save_op_new(ps_profile *p, int releasing);

static void release_retry_fire(ps_timer *t)
{
    release_retry *r = (release_retry *)t;
    ps_profile *p = r->profile;
    save_op *op = save_op_new(p, 1);
    if (!op)
        ps__service_issue(p->service, "out of memory retrying a release save",
                          p->store->name, p->key);
    ps__service_resume_key(p->service, p->store, p->key, op ? &op->base : NULL);
    ps__profile_unref(p);
    free(r);
}

static void schedule_release_retry(struct save_op *op)
{
    ps_service *s = op->base.service;
    release_retry *r = calloc(1, sizeof *r);
    if (!r) {
        ps__profile_queue_save(op->profile, 1);
        return;
    }
    r->timer.fire = release_retry_fire;
    r->profile = op->profile;
    ps__profile_ref(r->profile);
    ps__service_hold_key(&op->base);
    ps__service_add_timer(s, &r->timer, ps__service_mono_time(s) + s->config.load_repeat_delay);
}

/* Copies what the store now says about the session into the local MetaData. */
static void refresh_meta(ps_profile *p, const json_t *stored_meta, int wrote)
{
    for (size_t i = 0; i < sizeof refreshed_meta_keys / sizeof *refreshed_meta_keys; i++) {
        json_t *v = json_object_get(stored_meta, refreshed_meta_keys[i]);
        if (v)
            json_object_set_new(p->meta, refreshed_meta_keys[i], json_deep_copy(v));
        else
            json_object_del(p->meta, refreshed_meta_keys[i]);
    }
    json_t *tags = json_object_get(stored_meta, "MetaTags");
    if (wrote && tags)
        json_object_set_new(p->meta, "MetaTagsLatest", json_deep_copy(tags));
}

/* A release retried after a lost reply finds its own earlier write: no owner and our
 * SessionLoadCount. Then the stored MetaTags are ours, and MetaTagsLatest may say so. */
static int release_landed_before(const save_op *op, const json_t *stored_meta)
{
    int64_t count = -1;
    return op->releasing && !json_object_get(stored_meta, "ActiveSession") &&
           ps__json_get_int(json_object_get(stored_meta, "SessionLoadCount"), &count) &&
           count == op->expected_count;
}

/* Someone else holds the session now (or we handed it to a force loader). */
static void session_lost(ps_profile *p, const json_t *stored_meta)
{
    int64_t place = 0;
    const char *job = NULL;
    if (!ps__session_tag_get(json_object_get(stored_meta, "ActiveSession"), &place, &job))
        ps__session_tag_get(json_object_get(stored_meta, "ForceLoadSession"), &place, &job);
    ps__profile_release_locally(p, place, job);
}

static void save_finish(ps_op *base)
{
    save_op *op = (save_op *)base;
    ps_profile *p = op->profile;
    if (base->status != PS_OK) {
        ps__service_issue(base->service, base->message, base->store->name, base->key);
        if (op->releasing)
            schedule_release_retry(op);
        return;
    }
    if (op->wrote && op->report.bad)
        ps__service_corruption(base->service, base->store->name, base->key);
    if (op->data_dropped) {
        char message[256];
        snprintf(message, sizeof message, "final save: the document is over the %zu-byte "
                 "size limit; the session was released and the store keeps the last "
                 "Data that fit", base->service->config.max_document_size);
        ps__service_issue(base->service, message, base->store->name, base->key);
    }
    if (op->releasing)
        p->release_pending = 0;
    json_t *meta = json_object_get(op->result, "MetaData");
    if (json_is_object(meta))
        refresh_meta(p, meta, op->wrote || release_landed_before(op, meta));
    if (op->wrote && owns_doc(op, op->result)) {
        if (p->active)
            ps__global_updates_after_save(p->global_updates,
                                          json_object_get(op->result, "GlobalUpdates"));
    } else if (p->active) {
        session_lost(p, meta);
    }
}

static save_op *save_op_new(ps_profile *p, int releasing)
{
    save_op *op = (save_op *)ps__op_new(sizeof *op, &save_kind, p->store, p->key);
    if (!op)
        return NULL;
    op->profile = p;
    op->releasing = releasing;
    ps__profile_ref(p);
    return op;
}

int ps__profile_queue_save(ps_profile *p, int releasing)
{
    if (!releasing && p->save_queued)
        return PS_OK; /* one queued save carries every change made until it starts */
    save_op *op = save_op_new(p, releasing);
    if (!op)
        return ps__error_oom();
    if (!releasing)
        p->save_queued = 1;
    ps__service_enqueue(p->service, &op->base);
    return PS_OK;
}

int ps_profile_save(ps_profile *profile)
{
    int rc = check_writable(profile);
    if (rc != PS_OK)
        return rc;
    size_t size = json_dumpb(profile->data, NULL, 0, JSON_COMPACT);
    if (size == 0)
        return ps__error_set(PS_EINVAL, "profile \"%s\" Data cannot be encoded as JSON "
                                        "(a reference cycle?)", profile->key);
    if (size > profile->service->config.max_document_size)
        return ps__error_set(PS_ETOOBIG, "profile \"%s\" Data is %zu bytes, over the "
                                         "%zu-byte limit", profile->key, size,
                             profile->service->config.max_document_size);
    return ps__profile_queue_save(profile, 0);
}

/* The setters also work during the final save's before-save hook, when the profile
 * is already inactive but its last Data is still to be written. */
static int check_settable(const ps_profile *p)
{
    if (p && p->in_before_save)
        return PS_OK;
    return check_writable(p);
}

int ps_profile_set_data_new(ps_profile *profile, json_t *data)
{
    int rc = check_settable(profile);
    if (rc == PS_OK && !json_is_object(data))
        rc = ps__error_set(PS_EINVAL, "profile Data must be a JSON object");
    if (rc != PS_OK) {
        json_decref(data);
        return rc;
    }
    json_decref(profile->data);
    profile->data = data;
    return PS_OK;
}

int ps_profile_set_meta_tags_new(ps_profile *profile, json_t *meta_tags)
{
    int rc = check_settable(profile);
    if (rc == PS_OK && !json_is_object(meta_tags))
        rc = ps__error_set(PS_EINVAL, "MetaTags must be a JSON object");
    if (rc != PS_OK) {
        json_decref(meta_tags);
        return rc;
    }
    if (json_object_set_new(profile->meta, "MetaTags", meta_tags))
        return ps__error_oom();
    profile->meta_tags = meta_tags;
    return PS_OK;
}

int ps_profile_set_before_save(ps_profile *profile, ps_before_save_fn fn, void *userdata)
{
    if (!profile)
        return ps__error_set(PS_EINVAL, "profile is NULL");
    profile->before_save = fn;
    profile->before_save_userdata = userdata;
    return PS_OK;
}
