/*
 * profileservice.c — the Lua 5.4 module `profileservice`: ProfileService name for
 * name as the seed document (API.md) spells it, plus what Roblox gives for free made
 * explicit: Configure{…}, Update() (call it every tick, like Heartbeat) and Shutdown()
 * (BindToClose; also run when the Lua state closes).
 *
 * This file holds the module state, its settings and clock, and the protected calls
 * into Lua that every callback goes through. signal.c has the service signals and the
 * connections, store.c ProfileStore and the coroutine machinery, profile.c Profile and
 * GlobalUpdates, convert.c the Lua ⇄ JSON mapping.
 */
#include "lps.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- entering the binding, callbacks into Lua -------------------------------------- */

lps_state *lps__enter(lua_State *L)
{
    lps_state *st = lua_touserdata(L, lua_upvalueindex(1));
    st->L = L;
    return st;
}

void lps__check_can_block(lua_State *L, lps_state *st, const char *what)
{
    if (st->callback_depth > 0)
        luaL_error(L,
                   "%s cannot be called from inside a listener or handler "
                   "(listeners must not yield)",
                   what);
}

int lps__raise_last(lua_State *L)
{
    return luaL_error(L, "%s", ps_error_last()->message);
}

void lps__report(const char *what, const char *message)
{
    fprintf(stderr, "[ProfileService]: error in %s: %s\n", what, message);
    fflush(stderr);
}

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int plain_handler(lua_State *L)
{
    if (!lua_isstring(L, 1))
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    return 1;
}

/* Every call from the library into Lua comes through here: protected (a Lua error
 * must never longjmp across the library's frames), not yieldable, counted as a
 * callback (blocking calls refuse inside), on the thread that entered last. */
int lps__protect(lps_state *st, lua_CFunction fn, void *arg, char *err, size_t errlen,
                 int traceback)
{
    lua_State *L = st->L;
    if (!lua_checkstack(L, 8)) {
        snprintf(err, errlen, "Lua stack overflow");
        return LUA_ERRMEM;
    }
    int base = lua_gettop(L);
    lua_pushcfunction(L, traceback ? traceback_handler : plain_handler);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, arg);
    st->callback_depth++;
    int rc = lua_pcall(L, 1, 0, base + 1);
    st->callback_depth--;
    st->L = L;
    if (rc != LUA_OK && err)
        snprintf(err, errlen, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
    lua_settop(L, base);
    return rc;
}

/* ---- profile handles --------------------------------------------------------------- */

void lps__free_profile(lps_state *st, ps_profile *p)
{
    if (st->callback_depth == 0 || st->closed) {
        ps_profile_free(p);
        return;
    }
    if (st->deferred_count == st->deferred_cap) {
        size_t cap = st->deferred_cap ? st->deferred_cap * 2 : 16;
        ps_profile **d = realloc(st->deferred, cap * sizeof *d);
        if (!d)
            return; /* leak rather than free inside the library's call */
        st->deferred = d;
        st->deferred_cap = cap;
    }
    st->deferred[st->deferred_count++] = p;
}

void lps__free_deferred(lps_state *st)
{
    while (st->deferred_count > 0)
        ps_profile_free(st->deferred[--st->deferred_count]);
}

/* ---- the clock --------------------------------------------------------------------- */

/* The library's clock: workers call it, so it only reads a number the host set. */
static double clock_now(void *userdata)
{
    lps_state *st = userdata;
    return atomic_load(&st->now);
}

static int call_clock(lua_State *L)
{
    lps_state *st = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->clock_ref);
    lua_call(L, 0, 1);
    int isnum;
    double t = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !isfinite(t))
        luaL_error(L, "the clock function returned %s, not a number",
                   luaL_typename(L, -1));
    atomic_store(&st->now, t);
    return 0;
}

void lps__refresh_clock(lps_state *st)
{
    char err[LPS_MESSAGE_MAX];
    if (st->clock_mode == CLOCK_FUNCTION &&
        lps__protect(st, call_clock, st, err, sizeof err, 1) != LUA_OK)
        lps__report("the clock function", err);
}

typedef struct sleep_args {
    lps_state *st;
    double seconds;
} sleep_args;

static int call_sleep(lua_State *L)
{
    sleep_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->st->sleep_ref);
    lua_pushnumber(L, a->seconds);
    lua_call(L, 1, 0);
    return 0;
}

/* The library's sleep (blocking calls waiting for a retry): virtual time jumps; a
 * Lua clock gets its sleep function called (or real time passes), then is re-read. */
static void clock_sleep(double seconds, void *userdata)
{
    lps_state *st = userdata;
    if (st->clock_mode == CLOCK_VIRTUAL) {
        atomic_store(&st->now, atomic_load(&st->now) + seconds);
        return;
    }
    char err[LPS_MESSAGE_MAX];
    sleep_args a = {st, seconds};
    if (st->sleep_ref != LUA_NOREF) {
        if (lps__protect(st, call_sleep, &a, err, sizeof err, 1) != LUA_OK)
            lps__report("the sleep function", err);
    } else {
        struct timespec ts = {(time_t)seconds,
                              (long)((seconds - (double)(time_t)seconds) * 1e9)};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    lps__refresh_clock(st);
}

/* ProfileService.AdvanceClock(seconds) → now: moves the virtual clock forward. */
static int m_advance_clock(lua_State *L)
{
    lps_state *st = lps__enter(L);
    double seconds = luaL_optnumber(L, 1, 0);
    if (st->clock_mode != CLOCK_VIRTUAL)
        return luaL_error(L, "ProfileService.AdvanceClock needs "
                             "ProfileService.Configure{clock = \"virtual\"}");
    luaL_argcheck(L, seconds >= 0 && isfinite(seconds), 1, "must be >= 0");
    atomic_store(&st->now, atomic_load(&st->now) + seconds);
    lua_pushnumber(L, atomic_load(&st->now));
    return 1;
}

/* ---- the service ------------------------------------------------------------------- */

ps_service *lps__service(lua_State *L, lps_state *st)
{
    if (st->service)
        return st->service;
    if (st->locked_early)
        luaL_error(L, "ProfileService was shut down");
    ps_config config = st->config;
    config.store_url = st->store_url; /* NULL: $PROFILESERVICE_STORE, else the default */
    config.job_id = st->job_id;
    if (st->clock_mode != CLOCK_SYSTEM) {
        config.clock = clock_now;
        config.sleep = clock_sleep;
        config.clock_userdata = st;
        lps__refresh_clock(st);
    }
    ps_service *s = NULL;
    if (ps_service_new(&s, &config) != PS_OK)
        return luaL_error(L, "ProfileService could not start: %s",
                          ps_error_last()->message),
               NULL;
    if (lps__signals_connect(st, s) != PS_OK) {
        ps_service_free(s);
        luaL_error(L, "ProfileService could not start: %s", ps_error_last()->message);
    }
    st->service = s;
    return s;
}

/* ---- ProfileService.Configure{…} --------------------------------------------------- */

/* Settings parsed from one Configure call; committed only when all of them are valid. */
typedef struct pending_config {
    ps_config config;
    char *store_url, *job_id; /* NULL: unchanged */
    lps_clock_mode clock_mode;
    int clock_ref, sleep_ref; /* LUA_NOREF: unchanged */
} pending_config;

typedef enum setting_type { SET_NUMBER, SET_INT } setting_type;

typedef struct setting {
    const char *name;
    setting_type type;
    size_t offset; /* in ps_config */
    double min;
} setting;

#define NUM(field, min)                                                                  \
    {                                                                                    \
#field, SET_NUMBER, offsetof(ps_config, field), min                              \
    }
#define INT(field, min)                                                                  \
    {                                                                                    \
#field, SET_INT, offsetof(ps_config, field), min                                 \
    }

static const setting settings[] = {NUM(auto_save_period, 1e-9),
                                   NUM(write_cooldown, 0),
                                   NUM(load_repeat_delay, 0),
                                   INT(force_load_max_steps, 1),
                                   NUM(assume_dead_session_lock, 1e-9),
                                   INT(issue_count_for_critical_state, 1),
                                   NUM(issue_last, 1e-9),
                                   NUM(critical_state_last, 0),
                                   INT(worker_threads, 1),
                                   {NULL, SET_NUMBER, 0, 0}};

static void configure_number(lua_State *L, pending_config *pc, const setting *s)
{
    char *field = (char *)&pc->config + s->offset;
    if (s->type == SET_INT) {
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < (lua_Integer)s->min || v > 1000000000)
            luaL_error(L, "ProfileService.Configure: %s must be an integer >= %d",
                       s->name, (int)s->min);
        *(int *)(void *)field = (int)v;
        return;
    }
    int isnum;
    double v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !isfinite(v) || v < s->min)
        luaL_error(L, "ProfileService.Configure: %s must be a number %s 0", s->name,
                   s->min > 0 ? ">" : ">=");
    *(double *)(void *)field = v;
}

static void replace_string(lua_State *L, char **slot, const char *name)
{
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "ProfileService.Configure: %s must be a string", name);
    char *copy = strdup(lua_tostring(L, -1));
    if (!copy)
        luaL_error(L, "out of memory");
    free(*slot);
    *slot = copy;
}

static void replace_ref(lua_State *L, int *slot)
{
    luaL_unref(L, LUA_REGISTRYINDEX, *slot);
    lua_pushvalue(L, -1);
    *slot = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void configure_clock(lua_State *L, pending_config *pc)
{
    const char *mode = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    if (lua_type(L, -1) == LUA_TFUNCTION) {
        replace_ref(L, &pc->clock_ref);
        pc->clock_mode = CLOCK_FUNCTION;
    } else if (strcmp(mode, "virtual") == 0) {
        pc->clock_mode = CLOCK_VIRTUAL;
    } else if (strcmp(mode, "system") == 0) {
        pc->clock_mode = CLOCK_SYSTEM;
    } else {
        luaL_error(L, "ProfileService.Configure: clock must be a function returning "
                      "seconds, \"virtual\" or \"system\"");
    }
}

static void configure_one(lua_State *L, pending_config *pc, const char *key)
{
    int isint;
    for (const setting *s = settings; s->name; s++) {
        if (strcmp(key, s->name) == 0) {
            configure_number(L, pc, s);
            return;
        }
    }
    if (strcmp(key, "store") == 0) {
        replace_string(L, &pc->store_url, key);
    } else if (strcmp(key, "job_id") == 0) {
        replace_string(L, &pc->job_id, key);
    } else if (strcmp(key, "place_id") == 0) {
        pc->config.place_id = (int64_t)lua_tointegerx(L, -1, &isint);
        if (!isint)
            luaL_error(L, "ProfileService.Configure: place_id must be an integer");
    } else if (strcmp(key, "max_document_size") == 0) {
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < 64)
            luaL_error(L, "ProfileService.Configure: max_document_size must be an "
                          "integer >= 64");
        pc->config.max_document_size = (size_t)v;
    } else if (strcmp(key, "clock") == 0) {
        configure_clock(L, pc);
    } else if (strcmp(key, "sleep") == 0) {
        if (lua_type(L, -1) != LUA_TFUNCTION)
            luaL_error(L, "ProfileService.Configure: sleep must be a function");
        replace_ref(L, &pc->sleep_ref);
    } else {
        luaL_error(L, "ProfileService.Configure: unknown setting \"%s\"", key);
    }
}

/* Protected: parses the table at 1 into the pending_config at 2. */
static int configure_parse(lua_State *L)
{
    pending_config *pc = lua_touserdata(L, 2);
    lua_settop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "ProfileService.Configure: setting names are strings");
        configure_one(L, pc, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    return 0;
}

static void commit_config(lua_State *L, lps_state *st, pending_config *pc)
{
    st->config = pc->config;
    if (pc->store_url) {
        free(st->store_url);
        st->store_url = pc->store_url;
    }
    if (pc->job_id) {
        free(st->job_id);
        st->job_id = pc->job_id;
    }
    if (pc->clock_mode == CLOCK_VIRTUAL && st->clock_mode != CLOCK_VIRTUAL)
        atomic_store(&st->now, (double)time(NULL));
    st->clock_mode = pc->clock_mode;
    if (pc->clock_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, st->clock_ref);
        st->clock_ref = pc->clock_ref;
    }
    if (pc->sleep_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, st->sleep_ref);
        st->sleep_ref = pc->sleep_ref;
    }
}

/* ProfileService.Configure{store = URL, place_id = …, job_id = …, clock = …, …}:
 * before first use only; settings not given keep their values; a call with a bad
 * setting changes nothing. */
static int m_configure(lua_State *L)
{
    lps_state *st = lps__enter(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (st->service || st->locked_early)
        return luaL_error(L, "ProfileService.Configure must be called before the first "
                             "use of ProfileService (the service already started)");
    pending_config pc = {st->config, NULL, NULL, st->clock_mode, LUA_NOREF, LUA_NOREF};
    lua_pushcfunction(L, configure_parse);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, &pc);
    int rc = lua_pcall(L, 2, 0, 0);
    int sleep_ok = (pc.sleep_ref == LUA_NOREF && st->sleep_ref == LUA_NOREF) ||
                   pc.clock_mode == CLOCK_FUNCTION;
    if (rc == LUA_OK && !sleep_ok) {
        lua_pushliteral(L, "ProfileService.Configure: sleep needs a clock function");
        rc = LUA_ERRRUN;
    }
    if (rc != LUA_OK) {
        free(pc.store_url);
        free(pc.job_id);
        luaL_unref(L, LUA_REGISTRYINDEX, pc.clock_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, pc.sleep_ref);
        return lua_error(L);
    }
    commit_config(L, st, &pc);
    return 0;
}

/* ---- Update, Shutdown, ServiceLocked ----------------------------------------------- */

/* ProfileService.Update(): the tick. Applies finished work, runs auto-saves and
 * listeners, then resumes the coroutines whose LoadProfileAsync (and so on) ended. */
static int m_update(lua_State *L)
{
    lps_state *st = lps__enter(L);
    lps__check_can_block(L, st, "ProfileService.Update");
    if (st->service) {
        lps__free_deferred(st);
        lps__refresh_clock(st);
        if (ps_service_update(st->service) != PS_OK)
            return lps__raise_last(L);
        lps__refresh_all_meta(st);
    }
    lps__resume_ready(L, st);
    return 0;
}

/* ProfileService.Shutdown(): BindToClose. Releases and saves every profile and
 * returns when that is done; coroutines still waiting get nil. */
static int m_shutdown(lua_State *L)
{
    lps_state *st = lps__enter(L);
    lps__check_can_block(L, st, "ProfileService.Shutdown");
    if (!st->service) {
        st->locked_early = 1;
        return 0;
    }
    lps__free_deferred(st);
    lps__refresh_clock(st);
    if (ps_service_shutdown(st->service) != PS_OK)
        return lps__raise_last(L);
    lps__refresh_all_meta(st);
    lps__resume_ready(L, st);
    return 0;
}

static int m_index(lua_State *L)
{
    lps_state *st = lps__enter(L);
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "ServiceLocked") == 0) {
        lua_pushboolean(L, st->locked_early ||
                               (st->service && ps_service_locked(st->service)));
        return 1;
    }
    return 0;
}

/* ---- the state's lifetime ---------------------------------------------------------- */

/* __gc of the state (and __close of the module): shut down, free everything. */
static int state_gc(lua_State *L)
{
    lps_state *st = luaL_checkudata(L, 1, LPS_STATE);
    if (st->closed)
        return 0;
    st->L = L;
    if (st->service) {
        if (st->callback_depth == 0) {
            lps__refresh_clock(st);
            ps_service_shutdown(st->service);
        }
        st->closed = 1;
        ps_service_free(st->service);
        st->service = NULL;
    }
    st->closed = 1;
    lps__free_deferred(st);
    free(st->deferred);
    st->deferred = NULL;
    st->deferred_cap = 0;
    lps__waiters_free(st);
    free(st->store_url);
    free(st->job_id);
    st->store_url = st->job_id = NULL;
    return 0;
}

static int m_close(lua_State *L)
{
    lps_state *st = lps__enter(L);
    if (st->service && st->callback_depth == 0)
        ps_service_shutdown(st->service);
    return 0;
}

/* ---- luaopen ----------------------------------------------------------------------- */

static void new_registry_table(lua_State *L, int *ref)
{
    lua_newtable(L);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static const luaL_Reg module_funcs[] = {{"GetProfileStore", lps__get_profile_store},
                                        {"Configure", m_configure},
                                        {"Update", m_update},
                                        {"Shutdown", m_shutdown},
                                        {"AdvanceClock", m_advance_clock},
                                        {NULL, NULL}};

static const luaL_Reg module_meta[] = {
    {"__index", m_index}, {"__close", m_close}, {NULL, NULL}};

__attribute__((visibility("default"))) int luaopen_profileservice(lua_State *L)
{
    lps_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    st->L = L;
    ps_config_init(&st->config);
    st->clock_ref = st->sleep_ref = LUA_NOREF;
    atomic_store(&st->now, (double)time(NULL));
    if (luaL_newmetatable(L, LPS_STATE)) {
        lua_pushcfunction(L, state_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, state_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    luaL_ref(L, LUA_REGISTRYINDEX); /* the state lives as long as the Lua state */
    new_registry_table(L, &st->actives_ref);
    new_registry_table(L, &st->stores_ref);

    lps__signal_open(L, st);
    lps__store_open(L, st);
    lps__profile_open(L, st);

    lua_newtable(L); /* the module */
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, module_funcs, 1);
    lps__signals_new(L, st);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, module_meta, 1);
    lua_setmetatable(L, -2);
    return 1;
}
