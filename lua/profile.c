/*
 * profile.c — Profile and GlobalUpdates.
 *
 * Profile.Data and Profile.MetaData are plain Lua tables the script reads and writes
 * freely. They live in the registry; the library's before-save hook converts Data and
 * MetaData.MetaTags to JSON and copies them into the C profile right before each save
 * (auto-save, Save, Release, Shutdown). A value the store cannot hold fails that save
 * with a message naming the path, and nothing stored changes. After each tick, what
 * the library learnt from the store (SessionLoadCount, ActiveSession, MetaTagsLatest,
 * …) is copied back into MetaData.
 */
#include "lps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* MetaData keys the library refreshes after each save; lps_profile.seen[] order. */
static const char *const refreshed_keys[6] = {"ProfileCreateTime", "SessionLoadCount",
                                              "ActiveSession",     "ForceLoadSession",
                                              "LastUpdate",        "MetaTagsLatest"};

typedef enum gu_kind { GU_OWN, GU_RESULT, GU_HANDLER } gu_kind;

/* GlobalUpdates userdata. GU_OWN: a profile's (uservalue 1 is the Profile, which
 * owns gu); GU_RESULT: GlobalUpdateProfileAsync's result, owned; GU_HANDLER: the
 * update handler's, NULL once the handler returned. */
typedef struct lps_gu {
    ps_global_updates *gu;
    lps_state *st;
    gu_kind kind;
} lps_gu;

/* ---- MetaData refresh -------------------------------------------------------------- */

static void refresh_meta(lua_State *L, lps_profile *lp)
{
    const json_t *meta = lp->p ? ps_profile_meta_data(lp->p) : NULL;
    if (!meta)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->meta_ref);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    for (int i = 0; i < 6; i++) {
        json_t *v = json_object_get(meta, refreshed_keys[i]);
        if (v == lp->seen[i]) /* the library replaces values: same pointer, same value */
            continue;
        lua_pushstring(L, refreshed_keys[i]);
        lps__push_json(L, v);
        lua_rawset(L, -3);
        json_decref(lp->seen[i]);
        lp->seen[i] = json_incref(v);
    }
    lua_pop(L, 1);
}

static int refresh_all(lua_State *L)
{
    lps_state *st = lua_touserdata(L, 1);
    for (lps_profile *lp = st->profiles; lp; lp = lp->next)
        refresh_meta(L, lp);
    return 0;
}

void lps__refresh_all_meta(lps_state *st)
{
    char err[LPS_MESSAGE_MAX];
    if (st->profiles && lps__protect(st, refresh_all, st, err, sizeof err, 0) != LUA_OK)
        lps__report("the MetaData refresh", err);
}

/* ---- Data and MetaTags to the C profile -------------------------------------------- */

typedef struct sync_args {
    lps_profile *lp;
    json_t *data, *tags;
    int not_table; /* Profile.Data is not a table */
    char err[LPS_MESSAGE_MAX];
} sync_args;

static int sync_convert(lua_State *L)
{
    sync_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->lp->data_ref);
    if (!lua_istable(L, -1)) {
        a->not_table = 1;
        snprintf(a->err, sizeof a->err, "Profile.Data is %s%s, not a table",
                 lua_isnil(L, -1) ? "" : "a ", luaL_typename(L, -1));
        return 0;
    }
    a->data = lps__to_json(L, -1, ROOT_OBJECT, "Data", a->err, sizeof a->err);
    if (!a->data)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->lp->meta_ref);
    if (lua_istable(L, -1))
        lua_getfield(L, -1, "MetaTags");
    a->tags =
        lps__to_json(L, -1, ROOT_OBJECT, "MetaData.MetaTags", a->err, sizeof a->err);
    return 0;
}

/* A release save runs after the profile became inactive, where the setters refuse:
 * the values are replaced in place. See lua/README.md, "Library notes". */
static void apply_in_place(ps_profile *p, json_t *data, json_t *tags)
{
    json_t *d = ps_profile_data(p);
    json_t *t = (json_t *)ps_profile_meta_tags(p);
    if (json_is_object(d) && json_object_clear(d) == 0)
        json_object_update(d, data);
    if (json_is_object(t) && json_object_clear(t) == 0)
        json_object_update(t, tags);
    json_decref(data);
    json_decref(tags);
}

/* @return 0; -1 (message in err); -2 when Data is not a table. */
int lps__profile_sync(lps_state *st, lps_profile *lp, char *err, size_t errlen)
{
    sync_args a;
    memset(&a, 0, sizeof a);
    a.lp = lp;
    if (lps__protect(st, sync_convert, &a, err, errlen, 0) != LUA_OK) {
        json_decref(a.data);
        json_decref(a.tags);
        return -1;
    }
    if (!a.data || !a.tags) {
        json_decref(a.data);
        snprintf(err, errlen, "%s", a.err);
        return a.not_table ? -2 : -1;
    }
    if (!ps_profile_is_active(lp->p)) {
        apply_in_place(lp->p, a.data, a.tags);
        return 0;
    }
    if (ps_profile_set_data_new(lp->p, a.data) != PS_OK) {
        json_decref(a.tags);
        snprintf(err, errlen, "%s", ps_error_last()->message);
        return -1;
    }
    if (ps_profile_set_meta_tags_new(lp->p, a.tags) != PS_OK) {
        snprintf(err, errlen, "%s", ps_error_last()->message);
        return -1;
    }
    return 0;
}

typedef struct key_args {
    const char *store, *key, *message;
} key_args;

static int push_store_key(lua_State *L, void *arg)
{
    key_args *a = arg;
    lua_pushstring(L, a->store);
    lua_pushstring(L, a->key);
    return 2;
}

static int push_issue(lua_State *L, void *arg)
{
    key_args *a = arg;
    lua_pushstring(L, a->message);
    lua_pushstring(L, a->store);
    lua_pushstring(L, a->key);
    return 3;
}

/* The library's before-save hook. */
static int before_save(ps_profile *p, void *userdata)
{
    lps_profile *lp = userdata;
    lps_state *st = lp->st;
    char err[LPS_MESSAGE_MAX];
    int rc = lps__profile_sync(st, lp, err, sizeof err);
    if (rc == 0)
        return 0;
    key_args a = {ps_store_name(ps_profile_store_of(p)), ps_profile_key(p), err};
    if (rc == -2) /* ProfileService: "accidentally setting Profile.Data to a non table" */
        lps__emit(st, SIG_CORRUPTION, push_store_key, &a);
    if (st->service && ps_service_locked(st->service) && !ps_profile_is_active(p)) {
        /* Shutdown must end: release with the last data that could be stored. */
        char message[LPS_MESSAGE_MAX + 80];
        snprintf(message, sizeof message,
                 "%s; released with the last data that could be saved", err);
        a.message = message;
        lps__emit(st, SIG_ISSUE, push_issue, &a);
        return 0;
    }
    return ps_error_set(PS_EINVAL, "%s", err);
}

/* Our own release listener, connected first: MetaData is fresh and the profile no
 * longer held for the service when the script's listeners run. */
static int on_released_protected(lua_State *L)
{
    lps_profile *lp = lua_touserdata(L, 1);
    refresh_meta(L, lp);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->st->actives_ref);
    lua_pushnil(L);
    lua_rawsetp(L, -2, lp);
    return 0;
}

static void on_released(ps_profile *p, int64_t place_id, const char *job_id, void *ud)
{
    lps_profile *lp = ud;
    char err[LPS_MESSAGE_MAX];
    (void)p;
    (void)place_id;
    (void)job_id;
    if (lps__protect(lp->st, on_released_protected, lp, err, sizeof err, 0) != LUA_OK)
        lps__report("the release bookkeeping", err);
}

/* ---- wrapping a ps_profile --------------------------------------------------------- */

static void new_gu(lua_State *L, lps_state *st, ps_global_updates *gu, gu_kind kind)
{
    lps_gu *g = lua_newuserdatauv(L, sizeof *g, 1);
    g->gu = gu;
    g->st = st;
    g->kind = kind;
    luaL_setmetatable(L, LPS_GU);
}

static void link_profile(lps_state *st, lps_profile *lp)
{
    lp->prev = NULL;
    lp->next = st->profiles;
    if (st->profiles)
        st->profiles->prev = lp;
    st->profiles = lp;
}

static void unlink_profile(lps_state *st, lps_profile *lp)
{
    if (lp->prev)
        lp->prev->next = lp->next;
    else if (st->profiles == lp)
        st->profiles = lp->next;
    if (lp->next)
        lp->next->prev = lp->prev;
    lp->next = lp->prev = NULL;
}

void lps__push_profile(lua_State *L, lps_state *st, ps_profile *p, int is_view)
{
    lps_profile *lp = lua_newuserdatauv(L, sizeof *lp, 2);
    memset(lp, 0, sizeof *lp);
    lp->p = p;
    lp->st = st;
    lp->is_view = is_view;
    lp->data_ref = lp->meta_ref = LUA_REFNIL;
    luaL_setmetatable(L, LPS_PROFILE); /* from here __gc frees p */
    int ud = lua_gettop(L);
    lps__push_json(L, ps_profile_data(p));
    lp->data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    const json_t *meta = ps_profile_meta_data(p);
    lps__push_json(L, meta);
    for (int i = 0; meta && !is_view && i < 6; i++) /* views never change */
        lp->seen[i] = json_incref(json_object_get(meta, refreshed_keys[i]));
    lp->meta_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    new_gu(L, st, ps_profile_global_updates(p), GU_OWN);
    lua_pushvalue(L, ud);
    lua_setiuservalue(L, -2, 1); /* the GlobalUpdates keeps its Profile alive */
    lua_setiuservalue(L, ud, 1);
    lua_newtable(L); /* fields the script adds */
    lua_setiuservalue(L, ud, 2);
    if (is_view)
        return;
    if (ps_profile_is_active(p)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, st->actives_ref);
        lua_pushvalue(L, ud);
        lua_rawsetp(L, -2, lp);
        lua_pop(L, 1);
    }
    link_profile(st, lp);
    ps_profile_set_before_save(p, before_save, lp);
    if (ps_profile_listen_to_release(&lp->release_conn, p, on_released, lp, NULL) !=
        PS_OK)
        lp->release_conn = NULL;
}

/* ---- Profile methods --------------------------------------------------------------- */

static lps_profile *check_profile(lua_State *L, int idx)
{
    lps_profile *lp = luaL_checkudata(L, idx, LPS_PROFILE);
    if (!lp->p)
        luaL_error(L, "the profile was garbage-collected");
    lp->st->L = L; /* callbacks of what this method starts run on this thread */
    return lp;
}

static int pr_is_active(lua_State *L)
{
    lps_profile *lp = check_profile(L, 1);
    lua_pushboolean(L, ps_profile_is_active(lp->p));
    return 1;
}

static const char *check_tag_name(lua_State *L, int idx)
{
    size_t n;
    const char *name = luaL_checklstring(L, idx, &n);
    luaL_argcheck(L, n > 0, idx, "tag_name must be a non-empty string");
    return name;
}

/* Pushes MetaData.MetaTags (or nil). */
static int push_meta_tags(lua_State *L, lps_profile *lp)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->meta_ref);
    if (!lua_istable(L, -1))
        return LUA_TNIL;
    lua_getfield(L, -1, "MetaTags");
    lua_remove(L, -2);
    return lua_type(L, -1);
}

/* Profile:GetMetaTag(tag_name) → value. */
static int pr_get_meta_tag(lua_State *L)
{
    lps_profile *lp = check_profile(L, 1);
    const char *name = check_tag_name(L, 2);
    if (push_meta_tags(L, lp) != LUA_TTABLE)
        return 0;
    lua_getfield(L, -1, name);
    return 1;
}

static void check_writable(lua_State *L, lps_profile *lp, const char *what)
{
    if (lp->is_view)
        luaL_error(L, "%s: profile \"%s\" is a view; it cannot be written", what,
                   ps_profile_key(lp->p));
    if (!ps_profile_is_active(lp->p))
        luaL_error(L, "%s: profile \"%s\" is no longer active (PROFILE EXPIRED)", what,
                   ps_profile_key(lp->p));
}

/* Profile:SetMetaTag(tag_name, value): saved with the profile, like Data. */
static int pr_set_meta_tag(lua_State *L)
{
    lps_profile *lp = check_profile(L, 1);
    const char *name = check_tag_name(L, 2);
    check_writable(L, lp, "SetMetaTag");
    if (!lua_isnil(L, 3)) {
        char path[128], err[LPS_MESSAGE_MAX];
        snprintf(path, sizeof path, "MetaData.MetaTags[\"%.60s\"]", name);
        json_t *v = lps__to_json(L, 3, ROOT_VALUE, path, err, sizeof err);
        if (!v)
            return luaL_error(L, "%s", err);
        json_decref(v);
    }
    if (push_meta_tags(L, lp) != LUA_TTABLE)
        return luaL_error(L, "Profile.MetaData.MetaTags is not a table");
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, name);
    return 0;
}

typedef struct release_args {
    int64_t place_id;
    const char *job_id;
} release_args;

static int push_release(lua_State *L, void *arg)
{
    release_args *a = arg;
    lua_pushinteger(L, (lua_Integer)a->place_id);
    if (a->job_id)
        lua_pushstring(L, a->job_id);
    else
        lua_pushnil(L);
    return 2;
}

static void release_listener(ps_profile *p, int64_t place_id, const char *job_id,
                             void *userdata)
{
    release_args a = {place_id, job_id};
    (void)p;
    lps__record_call(userdata, "ListenToRelease listener", push_release, &a);
}

/* Profile:ListenToRelease(listener) → ScriptConnection; listener(place_id, job_id). */
static int pr_listen_to_release(lua_State *L)
{
    lps_profile *lp = check_profile(L, 1);
    lps_state *st = lp->st;
    lps_record *r = lps__record_new(L, st, 2);
    ps_connection *c = NULL;
    if (ps_profile_listen_to_release(&c, lp->p, release_listener, r, lps__record_free) !=
        PS_OK) {
        lps__record_free(r);
        return lps__raise_last(L);
    }
    lps__record_attach(r, c);
    return 1;
}

/* Profile:Release(): does not yield; the final save is written by a worker. */
static int pr_release(lua_State *L)
{
    lps_profile *lp = check_profile(L, 1);
    if (ps_profile_release(lp->p) != PS_OK)
        return lps__raise_last(L);
    return 0;
}

/* Profile:Save(): converts Data and MetaTags now, so a bad value raises here. */
static int pr_save(lua_State *L)
{
    lps_profile *lp = check_profile(L, 1);
    lps_state *st = lp->st;
    if (lp->is_view || !ps_profile_is_active(lp->p)) {
        ps_profile_save(lp->p); /* PS_EVIEW / PS_ERELEASED with the library's message */
        return lps__raise_last(L);
    }
    char err[LPS_MESSAGE_MAX];
    int rc = lps__profile_sync(st, lp, err, sizeof err);
    if (rc == -2) { /* "accidentally setting Profile.Data to a non table value" */
        key_args a = {ps_store_name(ps_profile_store_of(lp->p)), ps_profile_key(lp->p),
                      err};
        lps__emit(st, SIG_CORRUPTION, push_store_key, &a);
    }
    if (rc != 0)
        return luaL_error(L, "%s", err);
    if (ps_profile_save(lp->p) != PS_OK)
        return lps__raise_last(L);
    return 0;
}

static int pr_index(lua_State *L)
{
    lps_profile *lp = luaL_checkudata(L, 1, LPS_PROFILE);
    const char *key = lua_tostring(L, 2);
    if (key && lua_type(L, 2) == LUA_TSTRING) {
        if (strcmp(key, "Data") == 0) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, lp->data_ref);
            return 1;
        }
        if (strcmp(key, "MetaData") == 0) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, lp->meta_ref);
            return 1;
        }
        if (strcmp(key, "GlobalUpdates") == 0) {
            lua_getiuservalue(L, 1, 1);
            return 1;
        }
    }
    lua_getiuservalue(L, 1, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
        return 1;
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2)); /* methods */
    return 1;
}

static int pr_newindex(lua_State *L)
{
    lps_profile *lp = luaL_checkudata(L, 1, LPS_PROFILE);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "Data") == 0) {
        /* Any value; a non-table fails the next save (and fires CorruptionSignal). */
        lua_pushvalue(L, 3);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        luaL_unref(L, LUA_REGISTRYINDEX, lp->data_ref);
        lp->data_ref = ref;
        return 0;
    }
    if (strcmp(key, "MetaData") == 0 || strcmp(key, "GlobalUpdates") == 0)
        return luaL_error(L, "Profile.%s is read-only", key);
    lua_getiuservalue(L, 1, 2);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

static int pr_gc(lua_State *L)
{
    lps_profile *lp = luaL_checkudata(L, 1, LPS_PROFILE);
    lps_state *st = lp->st;
    st->L = L;
    if (lp->p && !lp->is_view) {
        unlink_profile(st, lp);
        /* A release save may still be queued: give it the latest Data. */
        char err[LPS_MESSAGE_MAX];
        if (st->service && !st->closed)
            lps__profile_sync(st, lp, err, sizeof err);
        ps_profile_set_before_save(lp->p, NULL, NULL);
        ps_connection_disconnect(lp->release_conn);
        for (int i = 0; i < 6; i++)
            json_decref(lp->seen[i]);
    }
    if (lp->p)
        lps__free_profile(st, lp->p);
    lp->p = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, lp->data_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, lp->meta_ref);
    lp->data_ref = lp->meta_ref = LUA_REFNIL;
    return 0;
}

static int pr_close(lua_State *L)
{
    lps_profile *lp = luaL_checkudata(L, 1, LPS_PROFILE);
    if (lp->p && !lp->is_view)
        return pr_release(L);
    return 0;
}

static int pr_tostring(lua_State *L)
{
    lps_profile *lp = luaL_checkudata(L, 1, LPS_PROFILE);
    if (!lp->p) {
        lua_pushliteral(L, "Profile (collected)");
        return 1;
    }
    lua_pushfstring(L, "Profile (%s/%s, %s)", ps_store_name(ps_profile_store_of(lp->p)),
                    ps_profile_key(lp->p),
                    lp->is_view                   ? "view"
                    : ps_profile_is_active(lp->p) ? "active"
                                                  : "released");
    return 1;
}

/* ---- GlobalUpdates ----------------------------------------------------------------- */

void lps__push_result_gu(lua_State *L, lps_state *st, ps_global_updates *gu)
{
    new_gu(L, st, gu, GU_RESULT);
}

void *lps__push_handler_gu(lua_State *L, lps_state *st, ps_global_updates *gu)
{
    new_gu(L, st, gu, GU_HANDLER);
    return lua_touserdata(L, -1);
}

void lps__invalidate_gu(void *handler_gu)
{
    if (handler_gu)
        ((lps_gu *)handler_gu)->gu = NULL;
}

static lps_gu *check_gu(lua_State *L)
{
    lps_gu *g = luaL_checkudata(L, 1, LPS_GU);
    g->st->L = L;
    if (g->kind == GU_HANDLER && !g->gu)
        luaL_error(L,
                   "this GlobalUpdates belonged to an update_handler that has returned; "
                   "it can only be used inside the handler");
    if (g->kind == GU_OWN) {
        lua_getiuservalue(L, 1, 1);
        lps_profile *lp = lua_touserdata(L, -1);
        lua_pop(L, 1);
        if (!lp || !lp->p)
            luaL_error(L, "the profile of this GlobalUpdates was garbage-collected");
    }
    return g;
}

static int push_updates(lua_State *L, int locked)
{
    lps_gu *g = check_gu(L);
    json_t *list = NULL;
    int rc = locked ? ps_global_updates_get_locked_updates(&list, g->gu)
                    : ps_global_updates_get_active_updates(&list, g->gu);
    if (rc != PS_OK)
        return lps__raise_last(L);
    lps__push_json(L, list); /* [[id, data], …] → {{update_id, update_data}, …} */
    json_decref(list);
    return 1;
}

/* GlobalUpdates:GetActiveUpdates() → {{update_id, update_data}, …} */
static int gu_get_active(lua_State *L)
{
    return push_updates(L, 0);
}

/* GlobalUpdates:GetLockedUpdates() → {{update_id, update_data}, …} */
static int gu_get_locked(lua_State *L)
{
    return push_updates(L, 1);
}

typedef struct update_args {
    int64_t id;
    const json_t *data;
} update_args;

static int push_update(lua_State *L, void *arg)
{
    update_args *a = arg;
    lua_pushinteger(L, (lua_Integer)a->id);
    lps__push_json(L, a->data);
    return 2;
}

static void active_listener(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    update_args a = {id, data};
    (void)gu;
    lps__record_call(ud, "ListenToNewActiveUpdate listener", push_update, &a);
}

static void locked_listener(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    update_args a = {id, data};
    (void)gu;
    lps__record_call(ud, "ListenToNewLockedUpdate listener", push_update, &a);
}

static int listen(lua_State *L, int locked)
{
    lps_gu *g = check_gu(L);
    lps_state *st = g->st;
    lps_record *r = lps__record_new(L, st, 2);
    ps_connection *c = NULL;
    int rc = locked ? ps_global_updates_listen_to_new_locked_update(
                          &c, g->gu, locked_listener, r, lps__record_free)
                    : ps_global_updates_listen_to_new_active_update(
                          &c, g->gu, active_listener, r, lps__record_free);
    if (rc != PS_OK) {
        lps__record_free(r);
        return lps__raise_last(L);
    }
    lps__record_attach(r, c);
    return 1;
}

/* GlobalUpdates:ListenToNewActiveUpdate(listener(update_id, update_data)) */
static int gu_listen_active(lua_State *L)
{
    return listen(L, 0);
}

/* GlobalUpdates:ListenToNewLockedUpdate(listener(update_id, update_data)) */
static int gu_listen_locked(lua_State *L)
{
    return listen(L, 1);
}

static int64_t check_update_id(lua_State *L, int idx)
{
    return (int64_t)luaL_checkinteger(L, idx);
}

/* GlobalUpdates:LockActiveUpdate(update_id) */
static int gu_lock(lua_State *L)
{
    lps_gu *g = check_gu(L);
    if (ps_global_updates_lock_active_update(g->gu, check_update_id(L, 2)) != PS_OK)
        return lps__raise_last(L);
    return 0;
}

/* GlobalUpdates:ClearLockedUpdate(update_id) */
static int gu_clear_locked(lua_State *L)
{
    lps_gu *g = check_gu(L);
    if (ps_global_updates_clear_locked_update(g->gu, check_update_id(L, 2)) != PS_OK)
        return lps__raise_last(L);
    return 0;
}

static json_t *check_update_data(lua_State *L, int idx)
{
    char err[LPS_MESSAGE_MAX];
    luaL_checktype(L, idx, LUA_TTABLE);
    json_t *data = lps__to_json(L, idx, ROOT_TABLE, "update_data", err, sizeof err);
    if (!data)
        luaL_error(L, "%s", err);
    return data;
}

/* GlobalUpdates:AddActiveUpdate(update_data) → update_id (inside update_handler). */
static int gu_add(lua_State *L)
{
    lps_gu *g = check_gu(L);
    json_t *data = check_update_data(L, 2);
    int64_t id = 0;
    if (ps_global_updates_add_active_update_new(g->gu, data, &id) != PS_OK)
        return lps__raise_last(L);
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

/* GlobalUpdates:ChangeActiveUpdate(update_id, update_data) (inside update_handler). */
static int gu_change(lua_State *L)
{
    lps_gu *g = check_gu(L);
    int64_t id = check_update_id(L, 2);
    json_t *data = check_update_data(L, 3);
    if (ps_global_updates_change_active_update_new(g->gu, id, data) != PS_OK)
        return lps__raise_last(L);
    return 0;
}

/* GlobalUpdates:ClearActiveUpdate(update_id) (inside update_handler). */
static int gu_clear_active(lua_State *L)
{
    lps_gu *g = check_gu(L);
    if (ps_global_updates_clear_active_update(g->gu, check_update_id(L, 2)) != PS_OK)
        return lps__raise_last(L);
    return 0;
}

static int gu_gc(lua_State *L)
{
    lps_gu *g = luaL_checkudata(L, 1, LPS_GU);
    if (g->kind == GU_RESULT)
        ps_global_updates_free(g->gu);
    g->gu = NULL;
    return 0;
}

static int gu_tostring(lua_State *L)
{
    lps_gu *g = luaL_checkudata(L, 1, LPS_GU);
    static const char *const kinds[] = {"profile", "result", "update_handler"};
    lua_pushfstring(L, "GlobalUpdates (%s)", kinds[g->kind]);
    return 1;
}

/* ---- metatables -------------------------------------------------------------------- */

static const luaL_Reg profile_methods[] = {{"IsActive", pr_is_active},
                                           {"GetMetaTag", pr_get_meta_tag},
                                           {"SetMetaTag", pr_set_meta_tag},
                                           {"ListenToRelease", pr_listen_to_release},
                                           {"Release", pr_release},
                                           {"Save", pr_save},
                                           {NULL, NULL}};

static const luaL_Reg profile_meta[] = {{"__newindex", pr_newindex},
                                        {"__gc", pr_gc},
                                        {"__close", pr_close},
                                        {"__tostring", pr_tostring},
                                        {NULL, NULL}};

static const luaL_Reg gu_methods[] = {{"GetActiveUpdates", gu_get_active},
                                      {"GetLockedUpdates", gu_get_locked},
                                      {"ListenToNewActiveUpdate", gu_listen_active},
                                      {"ListenToNewLockedUpdate", gu_listen_locked},
                                      {"LockActiveUpdate", gu_lock},
                                      {"ClearLockedUpdate", gu_clear_locked},
                                      {"AddActiveUpdate", gu_add},
                                      {"ChangeActiveUpdate", gu_change},
                                      {"ClearActiveUpdate", gu_clear_active},
                                      {NULL, NULL}};

static const luaL_Reg gu_meta[] = {
    {"__gc", gu_gc}, {"__tostring", gu_tostring}, {NULL, NULL}};

void lps__profile_open(lua_State *L, lps_state *st)
{
    (void)st;
    /* Profile: __index is a function (Data, MetaData, GlobalUpdates, the script's
     * own fields, then the methods: upvalue 2). */
    /* Methods find their state in their object: a second instance of the module
     * (package.loadlib, a second "server" in one process) shares the metatables. */
    if (!luaL_newmetatable(L, LPS_PROFILE)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, profile_meta, 1);
    lua_pushvalue(L, -2);
    lua_newtable(L);
    lua_pushvalue(L, -4);
    luaL_setfuncs(L, profile_methods, 1);
    lua_pushcclosure(L, pr_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_newmetatable(L, LPS_GU);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, gu_meta, 1);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, gu_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
