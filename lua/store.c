/*
 * store.c — ProfileStore and "This method will yield".
 *
 * LoadProfileAsync, GlobalUpdateProfileAsync and ViewProfileAsync called inside a
 * coroutine start the library's _async form and yield (lua_yieldk). The done callback
 * runs inside ps_service_update, on the host thread; it only stores the result and
 * queues the waiter. ProfileService.Update resumes the queued coroutines after the
 * tick, outside any library call, so a resumed coroutine may do anything a main chunk
 * may. Called from the main chunk (or anywhere not yieldable) they block.
 *
 * Handlers (not_released_handler, update_handler) run inside the library's call on
 * the host thread, protected and not yieldable; an error in one, or a bad answer,
 * fails the call with a Lua error naming the problem.
 */
#include "lps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lps_store {
    ps_profile_store *store; /* owned by the service, which lives as long as the state */
    lps_state *st;
} lps_store;

typedef enum waiter_kind { W_LOAD, W_VIEW, W_GLOBAL_UPDATE } waiter_kind;

/* One call in progress: its result, and the coroutine waiting for it (if any). */
struct lps_waiter {
    lps_waiter *prev, *next;
    lps_wlist *list; /* st->pending, st->ready or NULL */
    lps_state *st;
    waiter_kind kind;
    int done, status;
    int thread_ref;  /* the waiting coroutine; LUA_NOREF for a blocking call */
    int handler_ref; /* the Lua handler; LUA_NOREF for none */
    ps_not_released_action fixed; /* the answer of a string handler ("Steal") */
    int handler_failed;           /* message holds the handler's error */
    char message[LPS_MESSAGE_MAX];
    ps_profile *profile;
    ps_global_updates *result;
};

/* ---- waiter lists ------------------------------------------------------------------ */

static void wlist_unlink(lps_waiter *w)
{
    lps_wlist *l = w->list;
    if (!l)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    w->list = NULL;
}

static void wlist_append(lps_wlist *l, lps_waiter *w)
{
    wlist_unlink(w);
    w->prev = l->tail;
    w->next = NULL;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    w->list = l;
}

/* A new waiter; the handler (when a function) is at @p handler_index. */
static lps_waiter *waiter_new(lua_State *L, lps_state *st, waiter_kind kind,
                              int handler_index)
{
    lps_waiter *w = calloc(1, sizeof *w);
    if (!w)
        luaL_error(L, "out of memory");
    w->st = st;
    w->kind = kind;
    w->thread_ref = w->handler_ref = LUA_NOREF;
    if (handler_index && lua_type(L, handler_index) == LUA_TFUNCTION) {
        lua_pushvalue(L, handler_index);
        w->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return w;
}

static void waiter_free(lua_State *L, lps_waiter *w)
{
    wlist_unlink(w);
    luaL_unref(L, LUA_REGISTRYINDEX, w->thread_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->handler_ref);
    free(w);
}

void lps__waiters_free(lps_state *st)
{
    lps_wlist *lists[2] = {&st->pending, &st->ready};
    for (int i = 0; i < 2; i++) {
        while (lists[i]->head) {
            lps_waiter *w = lists[i]->head;
            ps_profile_free(w->profile);
            ps_global_updates_free(w->result);
            waiter_free(st->L, w);
        }
    }
}

/* Records a finished call; a waiting coroutine is queued for the next Update. */
static void waiter_done(lps_waiter *w, int status)
{
    w->status = status;
    if (status != PS_OK && !w->handler_failed)
        snprintf(w->message, sizeof w->message, "%s", ps_error_last()->message);
    w->done = 1;
    if (w->thread_ref != LUA_NOREF)
        wlist_append(&w->st->ready, w);
}

static void load_done(int status, ps_profile *profile, void *userdata)
{
    lps_waiter *w = userdata;
    w->profile = profile;
    waiter_done(w, status);
}

static void gu_done(int status, ps_global_updates *result, void *userdata)
{
    lps_waiter *w = userdata;
    w->result = result;
    waiter_done(w, status);
}

/* ---- handlers ---------------------------------------------------------------------- */

typedef struct handler_args {
    lps_waiter *w;
    int64_t place_id;
    const char *job_id;
    ps_not_released_action action;
    ps_global_updates *gu;
    void *handler_gu; /* the Lua object given to the update handler */
} handler_args;

static const char *const answers[] = {"Repeat", "Cancel", "ForceLoad", "Steal", NULL};

static int call_not_released(lua_State *L)
{
    handler_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->w->handler_ref);
    lua_pushinteger(L, (lua_Integer)a->place_id);
    lua_pushstring(L, a->job_id);
    lua_call(L, 2, 1);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    for (int i = 0; s && answers[i]; i++) {
        if (strcmp(s, answers[i]) == 0) {
            a->action = (ps_not_released_action)(PS_REPEAT + i);
            return 0;
        }
    }
    if (s)
        return luaL_error(L,
                          "not_released_handler returned \"%s\"; expected \"Repeat\", "
                          "\"Cancel\", \"ForceLoad\" or \"Steal\"",
                          s);
    return luaL_error(L,
                      "not_released_handler returned %s; expected \"Repeat\", "
                      "\"Cancel\", \"ForceLoad\" or \"Steal\"",
                      luaL_typename(L, -1));
}

/* The library's not_released handler: asks the Lua function (or answers "Steal"). */
static ps_not_released_action not_released(int64_t place_id, const char *game_job_id,
                                           void *userdata)
{
    lps_waiter *w = userdata;
    if (w->handler_ref == LUA_NOREF)
        return w->fixed;
    handler_args a = {w, place_id, game_job_id, 0, NULL, NULL};
    char err[LPS_MESSAGE_MAX];
    if (lps__protect(w->st, call_not_released, &a, err, sizeof err, 0) != LUA_OK) {
        w->handler_failed = 1;
        snprintf(w->message, sizeof w->message, "%s%.480s",
                 strncmp(err, "not_released_handler", 20) ? "not_released_handler: " : "",
                 err);
        return (ps_not_released_action)0; /* fails the load with PS_EINVAL */
    }
    return a.action;
}

static int call_update_handler(lua_State *L)
{
    handler_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->w->handler_ref);
    a->handler_gu = lps__push_handler_gu(L, a->w->st, a->gu);
    lua_call(L, 1, 0);
    return 0;
}

/* The library's update handler: runs the Lua function over a GlobalUpdates object
 * valid only during the call. A Lua error fails the whole call, nothing written. */
static void update_handler(ps_global_updates *gu, void *userdata)
{
    lps_waiter *w = userdata;
    handler_args a = {w, 0, NULL, 0, gu, NULL};
    char err[LPS_MESSAGE_MAX];
    int rc = lps__protect(w->st, call_update_handler, &a, err, sizeof err, 0);
    lps__invalidate_gu(a.handler_gu);
    if (rc != LUA_OK) {
        w->handler_failed = 1;
        snprintf(w->message, sizeof w->message, "update_handler: %.480s", err);
        /* A failing method call fails the whole call (profileservice.h). */
        ps_global_updates_add_active_update_new(gu, json_null(), NULL);
    }
}

/* ---- results ----------------------------------------------------------------------- */

/* Pushes what the seed returns for a finished call, or raises; frees the waiter. */
static int finish(lua_State *L, lps_waiter *w)
{
    lps_state *st = w->st;
    int status = w->status, kind = w->kind;
    ps_profile *profile = w->profile;
    ps_global_updates *result = w->result;
    char message[LPS_MESSAGE_MAX];
    snprintf(message, sizeof message, "%s", w->message);
    waiter_free(L, w);
    st->L = L;
    if (status == PS_OK && kind == W_GLOBAL_UPDATE) {
        lps__push_result_gu(L, st, result);
        return 1;
    }
    if (status == PS_OK) {
        if (kind == W_LOAD && !ps_profile_is_active(profile)) {
            /* The service began shutting down while it loaded: nil, as on Roblox. */
            lps__free_profile(st, profile);
            lua_pushnil(L);
            return 1;
        }
        lps__push_profile(L, st, profile, kind == W_VIEW);
        return 1;
    }
    /* Expected outcomes: Cancel, another server's force load, a newer load of the
     * same key, ServiceLocked. */
    if (status == PS_ECANCELLED || status == PS_ECONFLICT || status == PS_ESHUTDOWN) {
        lua_pushnil(L);
        return 1;
    }
    return luaL_error(L, "%s", message);
}

/* ---- yielding ---------------------------------------------------------------------- */

static int continue_after_yield(lua_State *L, int status, lua_KContext ctx)
{
    lps_waiter *w = (lps_waiter *)ctx;
    (void)status;
    if (!w->done) /* resumed by someone else before the call ended: wait on */
        return lua_yieldk(L, 0, ctx, continue_after_yield);
    w->st->L = L;
    return finish(L, w);
}

/* Lua's own test for a dead coroutine (lcorolib.c auxstatus). */
static int coroutine_is_dead(lua_State *co)
{
    lua_Debug ar;
    int status = lua_status(co);
    if (status == LUA_YIELD)
        return 0;
    if (status != LUA_OK)
        return 1; /* it failed */
    return !lua_getstack(co, 0, &ar) && lua_gettop(co) == 0;
}

/* The coroutine was closed while it waited: nobody takes the result, so a loaded
 * profile is released at once rather than held until shutdown. */
static void waiter_discard(lua_State *L, lps_waiter *w)
{
    if (w->profile && w->kind == W_LOAD)
        ps_profile_release(w->profile);
    if (w->profile)
        lps__free_profile(w->st, w->profile);
    ps_global_updates_free(w->result);
    waiter_free(L, w);
}

static int resume_one(lua_State *L, lps_state *st)
{
    lps_waiter *w = st->ready.head;
    if (!w)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->thread_ref);
    lua_State *co = lua_tothread(L, -1);
    if (lua_status(co) != LUA_YIELD) {
        lua_pop(L, 1);
        if (coroutine_is_dead(co))
            waiter_discard(L, w);
        else
            wlist_append(&st->ready, w); /* running: try again next time */
        st->L = L;
        return 1;
    }
    wlist_unlink(w); /* the continuation frees it */
    int nres = 0;
    int rc = lua_resume(co, L, 0, &nres);
    st->L = L;
    if (rc == LUA_OK || rc == LUA_YIELD) {
        lua_pop(co, nres);
    } else {
        const char *msg = lua_tostring(co, -1);
        luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
        lps__report("a coroutine resumed by ProfileService.Update", lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_pop(co, 1);
    }
    lua_pop(L, 1);
    return 1;
}

void lps__resume_ready(lua_State *L, lps_state *st)
{
    /* Only what is ready now: a coroutine whose next call ends at once waits for the
     * next tick, so Update always returns. */
    size_t n = 0;
    for (lps_waiter *w = st->ready.head; w; w = w->next)
        n++;
    while (n-- > 0 && resume_one(L, st))
        ;
}

/* Starts the call in @p w: async and yield inside a coroutine, else blocking. */
typedef int (*start_async_fn)(lps_store *s, const char *key, lps_waiter *w);
typedef int (*run_blocking_fn)(lps_store *s, const char *key, lps_waiter *w);

static int run_call(lua_State *L, lps_store *s, const char *key, lps_waiter *w,
                    start_async_fn start_async, run_blocking_fn run_blocking)
{
    lps_state *st = s->st;
    if (lua_isyieldable(L)) {
        lua_pushthread(L);
        w->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        wlist_append(&st->pending, w);
        int rc = start_async(s, key, w);
        if (rc != PS_OK) {
            w->status = rc;
            if (!w->handler_failed)
                snprintf(w->message, sizeof w->message, "%s", ps_error_last()->message);
            return finish(L, w);
        }
        return lua_yieldk(L, 0, (lua_KContext)w, continue_after_yield);
    }
    if (st->callback_depth > 0) {
        waiter_free(L, w);
        return luaL_error(L, "this call would block inside a listener or handler "
                             "(listeners must not yield); call it from a coroutine");
    }
    lps__refresh_clock(st);
    int rc = run_blocking(s, key, w);
    st->L = L;
    lps__refresh_all_meta(st); /* saves may have finished while it blocked */
    w->status = rc;
    if (rc != PS_OK && !w->handler_failed)
        snprintf(w->message, sizeof w->message, "%s", ps_error_last()->message);
    return finish(L, w);
}

/* ---- ProfileStore methods ---------------------------------------------------------- */

static lps_store *check_store(lua_State *L)
{
    lps_store *s = luaL_checkudata(L, 1, LPS_STORE);
    s->st->L = L;
    return s;
}

static int load_async(lps_store *s, const char *key, lps_waiter *w)
{
    int has_handler = w->handler_ref != LUA_NOREF || w->fixed != 0;
    return ps_store_load_profile_async(s->store, key, has_handler ? not_released : NULL,
                                       load_done, w);
}

static int load_blocking(lps_store *s, const char *key, lps_waiter *w)
{
    int has_handler = w->handler_ref != LUA_NOREF || w->fixed != 0;
    return ps_store_load_profile(&w->profile, s->store, key,
                                 has_handler ? not_released : NULL, w);
}

/* ProfileStore:LoadProfileAsync(profile_key, not_released_handler) → Profile or nil. */
static int st_load(lua_State *L)
{
    lps_store *s = check_store(L);
    lps_state *st = s->st;
    const char *key = luaL_checkstring(L, 2);
    int t = lua_type(L, 3);
    ps_not_released_action fixed = 0;
    if (t == LUA_TSTRING && strcmp(lua_tostring(L, 3), "Steal") == 0)
        fixed = PS_STEAL;
    else if (!(t == LUA_TNONE || t == LUA_TNIL || t == LUA_TFUNCTION ||
               (t == LUA_TSTRING && strcmp(lua_tostring(L, 3), "ForceLoad") == 0)))
        return luaL_argerror(L, 3,
                             "not_released_handler must be \"ForceLoad\", \"Steal\" "
                             "or a function");
    if (ps_service_locked(lps__service(L, st))) {
        lua_pushnil(L);
        return 1;
    }
    lps_waiter *w = waiter_new(L, st, W_LOAD, 3);
    w->fixed = fixed;
    return run_call(L, s, key, w, load_async, load_blocking);
}

static int view_async(lps_store *s, const char *key, lps_waiter *w)
{
    return ps_store_view_profile_async(s->store, key, load_done, w);
}

static int view_blocking(lps_store *s, const char *key, lps_waiter *w)
{
    return ps_store_view_profile(&w->profile, s->store, key);
}

/* ProfileStore:ViewProfileAsync(profile_key) → Profile (view) or nil. */
static int st_view(lua_State *L)
{
    lps_store *s = check_store(L);
    lps_state *st = s->st;
    const char *key = luaL_checkstring(L, 2);
    if (ps_service_locked(lps__service(L, st))) {
        lua_pushnil(L);
        return 1;
    }
    return run_call(L, s, key, waiter_new(L, st, W_VIEW, 0), view_async, view_blocking);
}

static int gu_async(lps_store *s, const char *key, lps_waiter *w)
{
    return ps_store_global_update_profile_async(s->store, key, update_handler, gu_done,
                                                w);
}

static int gu_blocking(lps_store *s, const char *key, lps_waiter *w)
{
    return ps_store_global_update_profile(&w->result, s->store, key, update_handler, w);
}

/* ProfileStore:GlobalUpdateProfileAsync(profile_key, update_handler) → GlobalUpdates. */
static int st_global_update(lua_State *L)
{
    lps_store *s = check_store(L);
    lps_state *st = s->st;
    const char *key = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (ps_service_locked(lps__service(L, st))) {
        lua_pushnil(L);
        return 1;
    }
    lps_waiter *w = waiter_new(L, st, W_GLOBAL_UPDATE, 3);
    return run_call(L, s, key, w, gu_async, gu_blocking);
}

static int st_tostring(lua_State *L)
{
    lps_store *s = check_store(L);
    lua_pushfstring(L, "ProfileStore (%s)", ps_store_name(s->store));
    return 1;
}

/* ProfileService.GetProfileStore(profile_store_name, profile_template). */
int lps__get_profile_store(lua_State *L)
{
    lps_state *st = lps__enter(L);
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    ps_service *service = lps__service(L, st);
    char err[LPS_MESSAGE_MAX];
    json_t *template_ =
        lps__to_json(L, 2, ROOT_OBJECT, "profile_template", err, sizeof err);
    if (!template_)
        return luaL_error(L, "%s", err);
    ps_profile_store *store = NULL;
    int rc = ps_service_get_profile_store(&store, service, name, template_);
    json_decref(template_);
    if (rc != PS_OK)
        return lps__raise_last(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->stores_ref);
    if (lua_getfield(L, -1, name) == LUA_TUSERDATA)
        return 1; /* the same store object for the same name */
    lua_pop(L, 1);
    lps_store *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->store = store;
    s->st = st;
    luaL_setmetatable(L, LPS_STORE);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, name);
    return 1;
}

static const luaL_Reg store_meta[] = {{"__tostring", st_tostring}, {NULL, NULL}};
static const luaL_Reg store_methods[] = {{"LoadProfileAsync", st_load},
                                         {"GlobalUpdateProfileAsync", st_global_update},
                                         {"ViewProfileAsync", st_view},
                                         {NULL, NULL}};

void lps__store_open(lua_State *L, lps_state *st)
{
    (void)st;
    if (!luaL_newmetatable(L, LPS_STORE)) { /* a second instance: shared */
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, store_meta, 1);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, store_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
