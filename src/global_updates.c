/*
 * global_updates.c — GlobalUpdates (SEMANTICS.md §7).
 *
 * GlobalUpdateProfileAsync runs the caller's handler on the host thread, never on a
 * worker: a worker reads the key, the host runs the handler over a copy, recording
 * its edits, and a second worker call replays the edits inside the atomic update. Adds
 * commute with anything another server did meanwhile (their ids are renumbered);
 * a change or clear whose target changed meanwhile re-runs the handler on the new
 * state. So a gift is written once, with the handler seeing what it edits.
 */
#include "global_updates.h"

#include "document.h"
#include "error.h"
#include "profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum gu_mode { GU_OWNED, GU_VIEW, GU_HANDLER } gu_mode;
typedef enum gu_edit_kind { EDIT_ADD, EDIT_CHANGE, EDIT_CLEAR } gu_edit_kind;

typedef struct gu_edit {
    gu_edit_kind kind;
    int64_t id;           /* as the handler saw it (adds: provisional) */
    int64_t seen_version; /* change/clear of an existing update */
    json_t *data;
} gu_edit;

struct ps_global_updates {
    gu_mode mode;
    ps_profile *profile; /* GU_OWNED: the owner (which owns us) */
    json_t *latest;      /* [update_index, [[id, version, locked, data], …]] */
    ps_gu_pending pending;
    ps_signal new_active, new_locked;
    gu_edit *edits; /* GU_HANDLER */
    size_t edit_count, edit_cap;
    int64_t seen_index;
    int failed; /* first failing method status inside the handler */
};

/* ---- the stored component ------------------------------------------------------- */

static json_t *gu_list(const json_t *gu)
{
    return json_array_get(gu, 1);
}

static int64_t gu_index(const json_t *gu)
{
    int64_t index = 0;
    ps__json_get_int(json_array_get(gu, 0), &index);
    return index;
}

typedef struct gu_entry {
    int64_t id, version;
    int locked;
    json_t *data;
    size_t pos;
} gu_entry;

static int entry_read(gu_entry *e, const json_t *list, size_t pos)
{
    json_t *u = json_array_get(list, pos);
    e->pos = pos;
    e->locked = json_is_true(json_array_get(u, 2));
    e->data = json_array_get(u, 3);
    return ps__json_get_int(json_array_get(u, 0), &e->id) &&
           ps__json_get_int(json_array_get(u, 1), &e->version);
}

static int entry_find(gu_entry *e, const json_t *gu, int64_t id)
{
    json_t *list = gu_list(gu);
    for (size_t i = 0; i < json_array_size(list); i++)
        if (entry_read(e, list, i) && e->id == id)
            return 1;
    return 0;
}

static json_t *gu_copy_or_empty(const json_t *stored)
{
    return json_is_array(stored) ? json_deep_copy(stored) : json_pack("[i[]]", 0);
}

/* ---- construction --------------------------------------------------------------- */

static int gu_new(ps_global_updates **out, gu_mode mode, ps_profile *profile,
                  const json_t *stored)
{
    ps_global_updates *gu = calloc(1, sizeof *gu);
    if (!gu || !(gu->latest = gu_copy_or_empty(stored))) {
        free(gu);
        return ps__error_oom();
    }
    gu->mode = mode;
    gu->profile = profile;
    gu->seen_index = gu_index(gu->latest);
    ps__signal_init(&gu->new_active);
    ps__signal_init(&gu->new_locked);
    *out = gu;
    return PS_OK;
}

int ps__global_updates_new_owned(ps_global_updates **out, ps_profile *profile,
                                 const json_t *stored)
{
    return gu_new(out, GU_OWNED, profile, stored);
}

int ps__global_updates_new_view(ps_global_updates **out, ps_profile *profile,
                                const json_t *stored)
{
    return gu_new(out, GU_VIEW, profile, stored);
}

void ps__gu_pending_dispose(ps_gu_pending *p)
{
    free(p->lock_ids);
    free(p->clear_ids);
    memset(p, 0, sizeof *p);
}

void ps__global_updates_free(ps_global_updates *gu)
{
    if (!gu)
        return;
    ps__signal_dispose(&gu->new_active);
    ps__signal_dispose(&gu->new_locked);
    ps__gu_pending_dispose(&gu->pending);
    for (size_t i = 0; i < gu->edit_count; i++)
        json_decref(gu->edits[i].data);
    free(gu->edits);
    json_decref(gu->latest);
    free(gu);
}

void ps_global_updates_free(ps_global_updates *global_updates)
{
    /* A profile's own are freed with the profile. */
    if (global_updates && !global_updates->profile)
        ps__global_updates_free(global_updates);
}

ps_global_updates *ps_profile_global_updates(ps_profile *profile)
{
    if (!profile) {
        ps__error_set(PS_EINVAL, "profile is NULL");
        return NULL;
    }
    return profile->global_updates;
}

/* ---- pending id sets -------------------------------------------------------------- */

static int ids_has(const int64_t *ids, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static int ids_add(int64_t **ids, size_t *n, int64_t id)
{
    int64_t *grown = realloc(*ids, (*n + 1) * sizeof **ids);
    if (!grown)
        return ps__error_oom();
    grown[(*n)++] = id;
    *ids = grown;
    return PS_OK;
}

static int ids_copy(int64_t **out, size_t *out_n, const int64_t *ids, size_t n)
{
    *out = NULL;
    *out_n = 0;
    if (n == 0)
        return PS_OK;
    *out = malloc(n * sizeof *ids);
    if (!*out)
        return ps__error_oom();
    memcpy(*out, ids, n * sizeof *ids);
    *out_n = n;
    return PS_OK;
}

int ps__global_updates_snapshot(ps_gu_pending *out, const ps_global_updates *gu)
{
    memset(out, 0, sizeof *out);
    if (!gu)
        return PS_OK;
    if (ids_copy(&out->lock_ids, &out->lock_count, gu->pending.lock_ids,
                 gu->pending.lock_count) != PS_OK ||
        ids_copy(&out->clear_ids, &out->clear_count, gu->pending.clear_ids,
                 gu->pending.clear_count) != PS_OK) {
        ps__gu_pending_dispose(out);
        return PS_ENOMEM;
    }
    return PS_OK;
}

/* Owner's save transform: lock pending ids; remove pending clears that are locked
 * (an Active update is never removed by its owner). */
int ps__gu_apply_pending(json_t *doc, const ps_gu_pending *pending)
{
    json_t *list = gu_list(json_object_get(doc, "GlobalUpdates"));
    for (size_t i = json_array_size(list); i-- > 0;) {
        gu_entry e;
        if (!entry_read(&e, list, i))
            continue;
        json_t *u = json_array_get(list, i);
        if (e.locked && ids_has(pending->clear_ids, pending->clear_count, e.id)) {
            json_array_remove(list, i);
        } else if (!e.locked && ids_has(pending->lock_ids, pending->lock_count, e.id)) {
            if (json_array_set_new(u, 2, json_true()))
                return ps__error_oom();
        }
    }
    return PS_OK;
}

/* ---- reading ---------------------------------------------------------------------- */

static int get_updates(json_t **out, ps_global_updates *gu, int locked)
{
    if (!out || !gu)
        return ps__error_set(PS_EINVAL, "out and global updates are required");
    *out = json_array();
    if (!*out)
        return ps__error_oom();
    json_t *list = gu_list(gu->latest);
    for (size_t i = 0; i < json_array_size(list); i++) {
        gu_entry e;
        if (!entry_read(&e, list, i) || e.locked != locked)
            continue;
        if (locked ? ids_has(gu->pending.clear_ids, gu->pending.clear_count, e.id)
                   : ids_has(gu->pending.lock_ids, gu->pending.lock_count, e.id))
            continue;
        if (json_array_append_new(*out, json_pack("[IO]", (json_int_t)e.id, e.data))) {
            json_decref(*out);
            *out = NULL;
            return ps__error_oom();
        }
    }
    return PS_OK;
}

int ps_global_updates_get_active_updates(json_t **out, ps_global_updates *global_updates)
{
    return get_updates(out, global_updates, 0);
}

int ps_global_updates_get_locked_updates(json_t **out, ps_global_updates *global_updates)
{
    return get_updates(out, global_updates, 1);
}

/* ---- the owner's methods ---------------------------------------------------------- */

static int handler_fail(ps_global_updates *gu, int rc);

static int check_owned(ps_global_updates *gu)
{
    if (!gu)
        return ps__error_set(PS_EINVAL, "global updates are NULL");
    if (gu->mode != GU_OWNED)
        return handler_fail(gu, ps__error_set(gu->mode == GU_VIEW ? PS_EVIEW : PS_EINVAL,
                                              "only a loaded profile's own global "
                                              "updates can listen, lock and clear"));
    if (!gu->profile->active)
        return ps__error_set(PS_ERELEASED, "profile \"%s\" is no longer active",
                             gu->profile->key);
    return PS_OK;
}

static int listen(ps_connection **out, ps_global_updates *gu, ps_signal *which,
                  ps_global_update_listener_fn fn, void *userdata,
                  void (*free_userdata)(void *))
{
    int rc = check_owned(gu);
    if (rc == PS_OK && !fn)
        rc = ps__error_set(PS_EINVAL, "listener function is NULL");
    if (rc != PS_OK)
        return rc;
    return ps__signal_connect(out, which, (ps_generic_fn)fn, userdata, free_userdata);
}

int ps_global_updates_listen_to_new_active_update(ps_connection **out,
                                                  ps_global_updates *global_updates,
                                                  ps_global_update_listener_fn fn,
                                                  void *userdata,
                                                  void (*free_userdata)(void *))
{
    return listen(out, global_updates, global_updates ? &global_updates->new_active : NULL,
                  fn, userdata, free_userdata);
}

int ps_global_updates_listen_to_new_locked_update(ps_connection **out,
                                                  ps_global_updates *global_updates,
                                                  ps_global_update_listener_fn fn,
                                                  void *userdata,
                                                  void (*free_userdata)(void *))
{
    return listen(out, global_updates, global_updates ? &global_updates->new_locked : NULL,
                  fn, userdata, free_userdata);
}

int ps_global_updates_lock_active_update(ps_global_updates *gu, int64_t update_id)
{
    int rc = check_owned(gu);
    if (rc != PS_OK)
        return rc;
    gu_entry e;
    if (!entry_find(&e, gu->latest, update_id))
        return ps__error_set(PS_ENOTFOUND, "no global update %lld",
                             (long long)update_id);
    if (e.locked)
        return ps__error_set(PS_EINVAL, "global update %lld is locked, not active",
                             (long long)update_id);
    if (ids_has(gu->pending.lock_ids, gu->pending.lock_count, update_id))
        return ps__error_set(PS_EINVAL, "global update %lld is already being locked",
                             (long long)update_id);
    return ids_add(&gu->pending.lock_ids, &gu->pending.lock_count, update_id);
}

int ps_global_updates_clear_locked_update(ps_global_updates *gu, int64_t update_id)
{
    int rc = check_owned(gu);
    if (rc != PS_OK)
        return rc;
    gu_entry e;
    if (!entry_find(&e, gu->latest, update_id))
        return ps__error_set(PS_ENOTFOUND, "no global update %lld",
                             (long long)update_id);
    if (!e.locked)
        return ps__error_set(PS_EINVAL, "global update %lld is not locked in the store "
                                        "yet (a lock is written by the next save)",
                             (long long)update_id);
    if (ids_has(gu->pending.clear_ids, gu->pending.clear_count, update_id))
        return ps__error_set(PS_EINVAL, "global update %lld is already being cleared",
                             (long long)update_id);
    return ids_add(&gu->pending.clear_ids, &gu->pending.clear_count, update_id);
}

/* ---- after an owned save: the diff of SEMANTICS.md §7.3 --------------------------- */

typedef struct update_args {
    ps_global_updates *gu;
    int64_t id;
    json_t *data;
} update_args;

static void invoke_update(ps_connection *c, void *args)
{
    update_args *a = args;
    ((ps_global_update_listener_fn)c->fn)(a->gu, a->id, a->data, c->userdata);
}

static int is_new(const json_t *old, const gu_entry *u)
{
    gu_entry o;
    return !entry_find(&o, old, u->id) || u->version > o.version || u->locked != o.locked;
}

static void fire_new(ps_global_updates *gu, const json_t *old, const gu_entry *u)
{
    update_args a = {gu, u->id, u->data};
    if (!is_new(old, u))
        return;
    if (!u->locked && !ids_has(gu->pending.lock_ids, gu->pending.lock_count, u->id)) {
        ps__signal_emit(&gu->new_active, invoke_update, &a);
        return;
    }
    if (!u->locked)
        return;
    /* NewLocked listeners run one by one and stop once one of them cleared it. */
    for (ps_connection *c = gu->new_locked.head; c; c = c->next) {
        if (!gu->profile->active ||
            ids_has(gu->pending.clear_ids, gu->pending.clear_count, u->id))
            break;
        if (!c->dead)
            invoke_update(c, &a);
    }
}

/* Drops pending ids the store now reflects (ProfileService never pruned them). */
static void prune_pending(ps_global_updates *gu)
{
    ps_gu_pending *p = &gu->pending;
    size_t keep = 0;
    for (size_t i = 0; i < p->lock_count; i++) {
        gu_entry e;
        if (entry_find(&e, gu->latest, p->lock_ids[i]) && !e.locked)
            p->lock_ids[keep++] = p->lock_ids[i];
    }
    p->lock_count = keep;
    keep = 0;
    for (size_t i = 0; i < p->clear_count; i++) {
        gu_entry e;
        if (entry_find(&e, gu->latest, p->clear_ids[i]))
            p->clear_ids[keep++] = p->clear_ids[i];
    }
    p->clear_count = keep;
}

void ps__global_updates_after_save(ps_global_updates *gu, const json_t *stored)
{
    json_t *fresh = gu_copy_or_empty(stored);
    if (!fresh)
        return; /* keep the old state; the next save retries the diff */
    json_t *old = gu->latest;
    gu->latest = fresh;
    ps_profile *p = gu->profile;
    p->refs++; /* a listener may free the caller's handle */
    p->service->in_update++;
    json_t *list = gu_list(fresh);
    for (size_t i = 0; i < json_array_size(list) && p->active; i++) {
        gu_entry u;
        if (entry_read(&u, list, i))
            fire_new(gu, old, &u);
    }
    p->service->in_update--;
    prune_pending(gu);
    json_decref(old);
    ps__profile_unref(p);
}

/* ---- the handler's methods (record and apply to the local copy) ------------------ */

static int check_handler(ps_global_updates *gu)
{
    if (!gu)
        return ps__error_set(PS_EINVAL, "global updates are NULL");
    if (gu->mode != GU_HANDLER)
        return ps__error_set(PS_EINVAL, "add, change and clear of active updates are "
                                        "only available inside an update handler");
    return PS_OK;
}

/* A failing method fails the whole GlobalUpdateProfileAsync call. */
static int handler_fail(ps_global_updates *gu, int rc)
{
    if (gu && gu->mode == GU_HANDLER && !gu->failed)
        gu->failed = rc;
    return rc;
}

static int record(ps_global_updates *gu, gu_edit edit)
{
    if (gu->edit_count == gu->edit_cap) {
        size_t cap = gu->edit_cap ? gu->edit_cap * 2 : 4;
        gu_edit *e = realloc(gu->edits, cap * sizeof *e);
        if (!e)
            return ps__error_oom();
        gu->edits = e;
        gu->edit_cap = cap;
    }
    gu->edits[gu->edit_count++] = edit;
    return PS_OK;
}

static int check_update_data(const json_t *data)
{
    if (!json_is_object(data) && !json_is_array(data))
        return ps__error_set(PS_EINVAL, "update data must be a JSON object or array");
    return PS_OK;
}

int ps_global_updates_add_active_update_new(ps_global_updates *gu, json_t *update_data,
                                            int64_t *out_id)
{
    int rc = check_handler(gu);
    if (rc == PS_OK)
        rc = check_update_data(update_data);
    if (rc != PS_OK) {
        json_decref(update_data);
        return handler_fail(gu, rc);
    }
    int64_t id = gu_index(gu->latest) + 1;
    json_t *entry = json_pack("[IIbO]", (json_int_t)id, (json_int_t)1, 0, update_data);
    if (!entry || json_array_set_new(gu->latest, 0, json_integer(id)) ||
        json_array_append_new(gu_list(gu->latest), entry) ||
        record(gu, (gu_edit){EDIT_ADD, id, 0, update_data}) != PS_OK) {
        json_decref(update_data);
        return handler_fail(gu, ps__error_oom());
    }
    if (out_id)
        *out_id = id;
    return PS_OK;
}

int ps_global_updates_add_active_update(ps_global_updates *gu, json_t *update_data,
                                        int64_t *out_id)
{
    /* A deep copy: the caller may change its object while a worker encodes ours. */
    return ps_global_updates_add_active_update_new(gu, json_deep_copy(update_data), out_id);
}

/* Finds an Active update for change/clear inside the handler. */
static int find_active(gu_entry *e, ps_global_updates *gu, int64_t id)
{
    if (!entry_find(e, gu->latest, id))
        return ps__error_set(PS_ENOTFOUND, "no global update %lld", (long long)id);
    if (e->locked)
        return ps__error_set(PS_EINVAL, "global update %lld is locked; only active "
                                        "updates can be changed or cleared", (long long)id);
    return PS_OK;
}

int ps_global_updates_change_active_update_new(ps_global_updates *gu, int64_t update_id,
                                               json_t *update_data)
{
    gu_entry e;
    int rc = check_handler(gu);
    if (rc == PS_OK)
        rc = check_update_data(update_data);
    if (rc == PS_OK)
        rc = find_active(&e, gu, update_id);
    if (rc != PS_OK) {
        json_decref(update_data);
        return handler_fail(gu, rc);
    }
    json_t *u = json_array_get(gu_list(gu->latest), e.pos);
    if (json_array_set_new(u, 1, json_integer(e.version + 1)) ||
        json_array_set(u, 3, update_data) ||
        record(gu, (gu_edit){EDIT_CHANGE, update_id, e.version, update_data}) != PS_OK) {
        json_decref(update_data);
        return handler_fail(gu, ps__error_oom());
    }
    return PS_OK;
}

int ps_global_updates_change_active_update(ps_global_updates *gu, int64_t update_id,
                                           json_t *update_data)
{
    return ps_global_updates_change_active_update_new(gu, update_id,
                                                      json_deep_copy(update_data));
}

int ps_global_updates_clear_active_update(ps_global_updates *gu, int64_t update_id)
{
    gu_entry e;
    int rc = check_handler(gu);
    if (rc == PS_OK)
        rc = find_active(&e, gu, update_id);
    if (rc == PS_OK && record(gu, (gu_edit){EDIT_CLEAR, update_id, e.version, NULL}))
        rc = PS_ENOMEM;
    if (rc != PS_OK)
        return handler_fail(gu, rc);
    json_array_remove(gu_list(gu->latest), e.pos);
    return PS_OK;
}

/* ---- replaying the edits inside the atomic update (worker) ------------------------ */

#define GU_EDIT_STALE 1 /* a change/clear target moved on: re-run the handler */

/* Ids the handler added are provisional: they follow the index it saw, and are
 * renumbered after the index found now. */
static int64_t real_id(int64_t id, int64_t seen_index, int64_t start_index)
{
    return id > seen_index ? id - seen_index + start_index : id;
}

static int replay_one(json_t *gu, const gu_edit *ed, int64_t seen, int64_t start)
{
    json_t *list = gu_list(gu);
    if (ed->kind == EDIT_ADD) {
        int64_t index = gu_index(gu) + 1;
        json_t *entry = json_pack("[IIbO]", (json_int_t)index, (json_int_t)1, 0, ed->data);
        if (!entry || json_array_set_new(gu, 0, json_integer(index)) ||
            json_array_append_new(list, entry))
            return ps__error_oom();
        return PS_OK;
    }
    gu_entry e;
    int64_t id = real_id(ed->id, seen, start);
    int provisional = ed->id > seen;
    if (!entry_find(&e, gu, id) || e.locked ||
        (!provisional && e.version != ed->seen_version))
        return GU_EDIT_STALE;
    json_t *u = json_array_get(list, e.pos);
    if (ed->kind == EDIT_CLEAR)
        return json_array_remove(list, e.pos) ? ps__error_oom() : PS_OK;
    if (json_array_set_new(u, 1, json_integer(e.version + 1)) ||
        json_array_set(u, 3, ed->data))
        return ps__error_oom();
    return PS_OK;
}

static int replay_edits(json_t *doc, const ps_global_updates *edits)
{
    json_t *gu = json_object_get(doc, "GlobalUpdates");
    if (!gu) {
        gu = json_pack("[i[]]", 0);
        if (!gu || json_object_set_new(doc, "GlobalUpdates", gu))
            return ps__error_oom();
    }
    int64_t start = gu_index(gu);
    for (size_t i = 0; i < edits->edit_count; i++) {
        int rc = replay_one(gu, &edits->edits[i], edits->seen_index, start);
        if (rc != PS_OK)
            return rc;
    }
    return PS_OK;
}

/* ---- GlobalUpdateProfileAsync --------------------------------------------------- */

#define GU_MAX_HANDLER_RUNS 1000

typedef struct gu_request {
    ps_timer timer; /* retry after a backend failure */
    ps_profile_store *store;
    char *key;
    ps_global_update_handler_fn handler;
    void *handler_userdata;
    ps_global_updates_done_fn done;
    void *userdata;
    int handler_runs;
    unsigned long long seq; /* this service's call number: a retry is idempotent */
} gu_request;

/* One op reads (edits == NULL) or writes (replays edits). */
typedef struct gu_op {
    ps_op base;
    gu_request *request;
    ps_global_updates *edits; /* handler-mode object, or NULL to read */
    int stale;                /* write: an edit's target moved on */
    json_t *current;          /* the stored GlobalUpdates seen by the worker */
    json_t *result;           /* write: the document written */
    ps_doc_report report;
} gu_op;

static void gu_op_finish(ps_op *base);

static void gu_op_dispose(ps_op *base)
{
    gu_op *op = (gu_op *)base;
    ps__global_updates_free(op->edits);
    json_decref(op->current);
    json_decref(op->result);
    free(base->key);
    free(op);
}

/* Which global update write of each service instance a document already holds: a
 * write whose reply was lost (it committed, the caller saw an error) is retried and
 * must not add its gifts twice. A service's writes on one key run one at a time and a
 * retry keeps its place (the key is held), so the last sequence number per instance
 * is enough. Stored as [[request_origin, seq], …], most recent last (request_origin:
 * the job id and a per-instance random suffix, see service.h); ProfileService keeps
 * unknown fields as they are. */
#define GU_REQUESTS_FIELD "GlobalUpdateRequestIds"
#define GU_REQUESTS_KEPT 256 /* servers; far more than can write in one retry delay */

static size_t request_find(const json_t *ids, const char *origin)
{
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *pair = json_array_get(ids, i);
        const char *stored = json_string_value(json_array_get(pair, 0));
        if (stored && strcmp(stored, origin) == 0)
            return i;
    }
    return (size_t)-1;
}

static int request_seen(const json_t *doc, const gu_request *r)
{
    json_t *ids = json_object_get(doc, GU_REQUESTS_FIELD);
    size_t i = request_find(ids, r->store->service->request_origin);
    int64_t seq = 0;
    return i != (size_t)-1 &&
           ps__json_get_int(json_array_get(json_array_get(ids, i), 1), &seq) &&
           (unsigned long long)seq == r->seq;
}

static int request_remember(json_t *doc, const gu_request *r)
{
    json_t *ids = json_object_get(doc, GU_REQUESTS_FIELD);
    if (!json_is_array(ids)) {
        ids = json_array();
        if (!ids || json_object_set_new(doc, GU_REQUESTS_FIELD, ids))
            return ps__error_oom();
    }
    const char *origin = r->store->service->request_origin;
    size_t i = request_find(ids, origin);
    if (i != (size_t)-1)
        json_array_remove(ids, i);
    if (json_array_append_new(ids, json_pack("[sI]", origin, (json_int_t)r->seq)))
        return ps__error_oom();
    while (json_array_size(ids) > GU_REQUESTS_KEPT)
        json_array_remove(ids, 0);
    return PS_OK;
}

static int gu_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    gu_op *op = userdata;
    json_decref(op->result);
    json_decref(op->current);
    op->result = op->current = NULL;
    op->stale = 0;
    json_t *doc = NULL;
    int rc = ps__document_decode(&doc, &op->report, current ? current->data : NULL,
                                 current ? current->len : 0);
    if (rc == PS_OK)
        op->current = json_incref(json_object_get(doc, "GlobalUpdates"));
    if (rc == PS_OK && request_seen(doc, op->request)) {
        op->result = doc; /* an earlier attempt committed: nothing more to write */
        return PS_OK;
    }
    if (rc == PS_OK && (rc = replay_edits(doc, op->edits)) == GU_EDIT_STALE) {
        op->stale = 1;
        json_decref(doc);
        return PS_OK; /* write nothing; the host re-runs the handler */
    }
    if (rc == PS_OK)
        rc = request_remember(doc, op->request);
    if (rc == PS_OK)
        rc = ps__doc_write(out, doc, &op->report, op->base.service->config.max_document_size);
    if (rc == PS_OK)
        op->result = doc;
    else
        json_decref(doc);
    return rc;
}

static void gu_op_run(ps_op *base)
{
    gu_op *op = (gu_op *)base;
    if (op->edits) {
        ps__op_update(base, gu_transform);
        return;
    }
    ps_backend *b = base->service->backend;
    ps_bytes bytes = {NULL, 0};
    json_t *doc = NULL;
    int rc = b->get(&bytes, b, base->store->name, base->key);
    if (rc == PS_ENOTFOUND)
        rc = PS_OK;
    else if (rc == PS_OK)
        rc = ps__document_decode(&doc, &op->report, bytes.data, bytes.len);
    op->current = json_incref(json_object_get(doc, "GlobalUpdates"));
    json_decref(doc);
    ps_bytes_dispose(&bytes);
    if (rc != PS_OK)
        ps__op_fail(base, rc);
}

static const ps_op_kind gu_kind = {"global update", NULL, gu_op_run, gu_op_finish,
                                   gu_op_dispose};

static void gu_request_end(gu_request *r, int status, const json_t *written)
{
    ps_service *s = r->store->service;
    ps_global_updates *result = NULL;
    if (status == PS_OK)
        status = gu_new(&result, GU_VIEW, NULL, written);
    s->in_update++;
    r->done(status, result, r->userdata);
    s->in_update--;
    free(r->key);
    free(r);
}

/* A read goes to the back of the key's queue; the write that follows it goes to the
 * front, so no other call of this service slips in between and makes it stale. */
static gu_op *gu_op_new(gu_request *r, ps_global_updates *edits)
{
    gu_op *op = (gu_op *)ps__op_new(sizeof *op, &gu_kind, r->store, r->key);
    if (!op) {
        ps__global_updates_free(edits);
        ps__error_oom();
        return NULL;
    }
    op->request = r;
    op->edits = edits;
    return op;
}

static int gu_submit(gu_request *r, ps_global_updates *edits)
{
    gu_op *op = gu_op_new(r, edits);
    if (!op)
        return PS_ENOMEM;
    if (edits)
        ps__service_enqueue_next(r->store->service, &op->base);
    else
        ps__service_enqueue(r->store->service, &op->base);
    return PS_OK;
}

/* Runs the caller's handler on the host over @p current; submits the edits. */
static void gu_run_handler(gu_request *r, const json_t *current)
{
    ps_global_updates *gu = NULL;
    int rc = ++r->handler_runs > GU_MAX_HANDLER_RUNS
                 ? ps__error_set(PS_ECONFLICT, "global updates of \"%s\" keep changing; "
                                               "gave up", r->key)
                 : gu_new(&gu, GU_HANDLER, NULL, current);
    if (rc == PS_OK) {
        ps_service *s = r->store->service;
        s->in_update++;
        r->handler(gu, r->handler_userdata);
        s->in_update--;
        rc = gu->failed;
    }
    if (rc == PS_OK && gu->edit_count == 0) {
        /* Nothing to write: the result is what the store holds. */
        gu_request_end(r, PS_OK, current);
        ps__global_updates_free(gu);
        return;
    }
    if (rc == PS_OK)
        rc = gu_submit(r, gu);
    else
        ps__global_updates_free(gu);
    if (rc != PS_OK)
        gu_request_end(r, rc, NULL);
}

/* The retry runs in the failed call's place in the key's queue (it was held), so no
 * later call of this service on the key can write first. */
static void gu_retry_fire(ps_timer *t)
{
    gu_request *r = (gu_request *)t;
    ps_service *s = r->store->service;
    gu_op *op = NULL;
    int rc = atomic_load(&s->locked)
                 ? ps__error_set(PS_ESHUTDOWN, "service is shutting down")
                 : ((op = gu_op_new(r, NULL)) ? PS_OK : PS_ENOMEM);
    ps__service_resume_key(s, r->store, r->key, op ? &op->base : NULL);
    if (rc != PS_OK)
        gu_request_end(r, rc, NULL);
}

static void gu_op_finish(ps_op *base)
{
    gu_op *op = (gu_op *)base;
    gu_request *r = op->request;
    ps_service *s = base->service;
    if (base->status == PS_EBACKEND || base->status == PS_ECONFLICT) {
        ps__service_issue(s, base->message, base->store->name, base->key);
        r->timer.fire = gu_retry_fire;
        r->timer.early_on_shutdown = 1;
        ps__service_hold_key(base);
        ps__service_add_timer(s, &r->timer,
                              ps__service_mono_time(s) + s->config.load_repeat_delay);
        return;
    }
    if (base->status != PS_OK) {
        gu_request_end(r, ps__error_set(base->status, "%s", base->message), NULL);
        return;
    }
    if (op->edits && op->report.bad && op->result)
        ps__service_corruption(s, base->store->name, base->key);
    if (!op->edits || op->stale)
        gu_run_handler(r, op->current);
    else
        gu_request_end(r, PS_OK, json_object_get(op->result, "GlobalUpdates"));
}

static int gu_start(ps_profile_store *store, const char *key,
                    ps_global_update_handler_fn handler, void *handler_userdata,
                    ps_global_updates_done_fn done, void *userdata)
{
    if (!store)
        return ps__error_set(PS_EINVAL, "profile store is NULL");
    int rc = ps__check_name("profile key", key);
    if (rc != PS_OK)
        return rc;
    if (!handler || !done)
        return ps__error_set(PS_EINVAL, "update handler and done callback are required");
    if (atomic_load(&store->service->locked))
        return ps__error_set(PS_ESHUTDOWN, "service is shutting down");
    gu_request *r = calloc(1, sizeof *r);
    if (!r || !(r->key = strdup(key))) {
        free(r);
        return ps__error_oom();
    }
    r->store = store;
    r->handler = handler;
    r->handler_userdata = handler_userdata;
    r->done = done;
    r->userdata = userdata;
    r->seq = ++store->service->gu_request_seq;
    return gu_submit(r, NULL);
}

int ps_store_global_update_profile_async(ps_profile_store *store, const char *key,
                                         ps_global_update_handler_fn handler,
                                         ps_global_updates_done_fn done, void *userdata)
{
    return gu_start(store, key, handler, userdata, done, userdata);
}

typedef struct gu_blocking {
    int done;
    int status;
    ps_global_updates *result;
    char message[320];
} gu_blocking;

static void gu_blocking_done(int status, ps_global_updates *result, void *userdata)
{
    gu_blocking *b = userdata;
    b->done = 1;
    b->status = status;
    b->result = result;
    if (status != PS_OK)
        ps__error_copy(b->message, sizeof b->message);
}

int ps_store_global_update_profile(ps_global_updates **out, ps_profile_store *store,
                                   const char *key, ps_global_update_handler_fn handler,
                                   void *userdata)
{
    if (out)
        *out = NULL;
    if (store && ps__service_check_can_block(store->service) != PS_OK)
        return PS_EINVAL;
    gu_blocking b = {0, 0, NULL, ""};
    int rc = gu_start(store, key, handler, userdata, gu_blocking_done, &b);
    if (rc != PS_OK)
        return rc;
    ps__service_run_until(store->service, &b.done);
    if (b.status != PS_OK)
        return ps__error_set(b.status, "%s", b.message);
    if (out)
        *out = b.result;
    else
        ps_global_updates_free(b.result);
    return PS_OK;
}
