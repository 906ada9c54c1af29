/*
 * signal.c — ProfileService.IssueSignal, .CorruptionSignal and .CriticalStateSignal
 * (ScriptSignal: :Connect(fn)), and ScriptConnection (:Disconnect(), .Connected) for
 * them and for the profile's listeners (ListenToRelease, ListenToNew*Update).
 *
 * The service signals keep their Lua listeners in a list of their own, so scripts may
 * connect before the service starts (Configure comes first) and the binding can fire
 * them itself. The library's own signal calls them through one C listener each.
 * Listeners run protected and not yieldable; one that errors is reported on stderr
 * and the others still run.
 */
#include "lps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the three service signals ----------------------------------------------------- */

typedef struct lps_sig {
    lps_state *st;
    lps_signal_kind kind;
    int count;    /* entries in the listener list (uservalue 1) */
    int emitting; /* emissions in progress: disconnects only mark */
    int dirty;    /* a connection was disconnected during an emission */
} lps_sig;

/* Connection userdata: a listener of a service signal (Lua list) or of a profile's
 * C signal (record). */
typedef struct lps_conn {
    lps_state *st;
    int on_signal; /* 1: uservalue 1 is the function, 2 the Signal */
    int connected;
    lps_record *record; /* C connections: NULL once disconnected or owner freed */
} lps_conn;

struct lps_record {
    lps_state *st;
    int fn_ref;
    ps_connection *connection;
    lps_conn *conn; /* the Connection userdata, NULL once collected */
};

static const char *const signal_names[SIG_COUNT] = {"IssueSignal", "CorruptionSignal",
                                                    "CriticalStateSignal"};

static void push_signal(lua_State *L, lps_state *st, lps_signal_kind kind)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->signal_ref[kind]);
}

/* Drops disconnected listeners from the list (not during an emission). */
static int compact_signal(lua_State *L)
{
    lps_sig *sig = lua_touserdata(L, 1);
    push_signal(L, sig->st, sig->kind);
    lua_getiuservalue(L, -1, 1);
    int list = lua_gettop(L), keep = 0;
    for (int i = 1; i <= sig->count; i++) {
        lua_rawgeti(L, list, i);
        lps_conn *c = lua_touserdata(L, -1);
        if (c->connected)
            lua_rawseti(L, list, ++keep);
        else
            lua_pop(L, 1);
    }
    for (int i = keep + 1; i <= sig->count; i++) {
        lua_pushnil(L);
        lua_rawseti(L, list, i);
    }
    sig->count = keep;
    sig->dirty = 0;
    return 0;
}

typedef struct emit_args {
    lps_sig *sig;
    int index;
    int (*push)(lua_State *L, void *arg);
    void *arg;
} emit_args;

static int call_listener(lua_State *L)
{
    emit_args *a = lua_touserdata(L, 1);
    push_signal(L, a->sig->st, a->sig->kind);
    lua_getiuservalue(L, -1, 1);
    lua_rawgeti(L, -1, a->index);
    lps_conn *c = lua_touserdata(L, -1);
    if (!c || !c->connected)
        return 0;
    lua_getiuservalue(L, -1, 1);
    int n = a->push(L, a->arg);
    lua_call(L, n, 0);
    return 0;
}

void lps__emit(lps_state *st, lps_signal_kind kind, int (*push)(lua_State *L, void *arg),
               void *arg)
{
    lua_State *L = st->L;
    if (!lua_checkstack(L, 4))
        return;
    push_signal(L, st, kind);
    lps_sig *sig = lua_touserdata(L, -1);
    lua_pop(L, 1);
    int n = sig->count; /* listeners connected during the emission wait for the next */
    char err[LPS_MESSAGE_MAX], what[64];
    snprintf(what, sizeof what, "%s listener", signal_names[kind]);
    sig->emitting++;
    for (int i = 1; i <= n; i++) {
        emit_args a = {sig, i, push, arg};
        if (lps__protect(st, call_listener, &a, err, sizeof err, 1) != LUA_OK)
            lps__report(what, err);
    }
    sig->emitting--;
    if (!sig->emitting && sig->dirty)
        lps__protect(st, compact_signal, sig, err, sizeof err, 0);
}

static int s_connect(lua_State *L)
{
    lps_sig *sig = luaL_checkudata(L, 1, LPS_SIGNAL);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lps_conn *c = lua_newuserdatauv(L, sizeof *c, 2);
    c->st = sig->st;
    c->on_signal = 1;
    c->connected = 1;
    c->record = NULL;
    luaL_setmetatable(L, LPS_CONNECTION);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 2);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, ++sig->count);
    lua_pop(L, 1);
    return 1;
}

static int s_tostring(lua_State *L)
{
    lps_sig *sig = luaL_checkudata(L, 1, LPS_SIGNAL);
    lua_pushfstring(L, "ScriptSignal (%s)", signal_names[sig->kind]);
    return 1;
}

/* ---- connections ------------------------------------------------------------------- */

lps_record *lps__record_new(lua_State *L, lps_state *st, int fn_index)
{
    fn_index = lua_absindex(L, fn_index);
    luaL_checktype(L, fn_index, LUA_TFUNCTION);
    lps_conn *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->st = st;
    c->on_signal = 0;
    c->connected = 0;
    c->record = NULL;
    luaL_setmetatable(L, LPS_CONNECTION);
    lps_record *r = malloc(sizeof *r);
    if (!r)
        luaL_error(L, "out of memory");
    lua_pushvalue(L, fn_index);
    r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    r->st = st;
    r->connection = NULL;
    r->conn = c;
    c->record = r;
    c->connected = 1;
    return r;
}

void lps__record_attach(lps_record *record, ps_connection *connection)
{
    record->connection = connection;
}

/* free_userdata of every C connection: runs once, at disconnect or owner death. */
void lps__record_free(void *userdata)
{
    lps_record *r = userdata;
    if (r->conn) {
        r->conn->record = NULL;
        r->conn->connected = 0;
    }
    luaL_unref(r->st->L, LUA_REGISTRYINDEX, r->fn_ref);
    free(r);
}

typedef struct record_args {
    lps_record *record;
    int (*push)(lua_State *L, void *arg);
    void *arg;
} record_args;

static int call_record(lua_State *L)
{
    record_args *a = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->record->fn_ref);
    int n = a->push(L, a->arg); /* may disconnect: a->record is not used after */
    lua_call(L, n, 0);
    return 0;
}

void lps__record_call(lps_record *record, const char *what,
                      int (*push)(lua_State *L, void *arg), void *arg)
{
    char err[LPS_MESSAGE_MAX];
    record_args a = {record, push, arg};
    if (lps__protect(record->st, call_record, &a, err, sizeof err, 1) != LUA_OK)
        lps__report(what, err);
}

static lps_conn *check_connection(lua_State *L)
{
    lps_conn *c = luaL_checkudata(L, 1, LPS_CONNECTION);
    c->st->L = L;
    return c;
}

static int c_disconnect(lua_State *L)
{
    lps_conn *c = check_connection(L);
    lps_state *st = c->st;
    if (!c->on_signal) {
        if (c->record && c->record->connection)
            ps_connection_disconnect(c->record->connection); /* frees the record */
        c->connected = 0;
        return 0;
    }
    if (!c->connected)
        return 0;
    c->connected = 0;
    lua_getiuservalue(L, 1, 2);
    lps_sig *sig = lua_touserdata(L, -1);
    sig->dirty = 1;
    if (!sig->emitting) {
        char err[LPS_MESSAGE_MAX];
        lps__protect(st, compact_signal, sig, err, sizeof err, 0);
    }
    return 0;
}

static int c_index(lua_State *L)
{
    lps_conn *c = check_connection(L);
    const char *key = luaL_checkstring(L, 2);
    if (strcmp(key, "Connected") == 0) {
        lua_pushboolean(L, c->connected);
        return 1;
    }
    if (strcmp(key, "Disconnect") == 0) {
        lua_pushcfunction(L, c_disconnect);
        return 1;
    }
    return 0;
}

static int c_gc(lua_State *L)
{
    lps_conn *c = check_connection(L);
    if (c->record) /* the listener stays connected; it just loses its handle */
        c->record->conn = NULL;
    c->record = NULL;
    return 0;
}

static int c_tostring(lua_State *L)
{
    lps_conn *c = check_connection(L);
    lua_pushfstring(L, "ScriptConnection (%s)",
                    c->connected ? "connected" : "disconnected");
    return 1;
}

/* ---- the library's signals to the Lua listeners ------------------------------------ */

typedef struct issue_args {
    const char *message, *store, *key;
} issue_args;

static int push_issue(lua_State *L, void *arg)
{
    issue_args *a = arg;
    lua_pushstring(L, a->message);
    lua_pushstring(L, a->store);
    lua_pushstring(L, a->key);
    return 3;
}

static void on_issue(const char *message, const char *store, const char *key, void *ud)
{
    issue_args a = {message, store, key};
    lps__emit(ud, SIG_ISSUE, push_issue, &a);
}

static int push_corruption(lua_State *L, void *arg)
{
    issue_args *a = arg;
    lua_pushstring(L, a->store);
    lua_pushstring(L, a->key);
    return 2;
}

static void on_corruption(const char *store, const char *key, void *ud)
{
    issue_args a = {NULL, store, key};
    lps__emit(ud, SIG_CORRUPTION, push_corruption, &a);
}

static int push_critical(lua_State *L, void *arg)
{
    lua_pushboolean(L, *(int *)arg);
    return 1;
}

static void on_critical(int is_critical, void *ud)
{
    lps__emit(ud, SIG_CRITICAL, push_critical, &is_critical);
}

static void make_signal(lua_State *L, lps_state *st, lps_signal_kind kind)
{
    lps_sig *sig = lua_newuserdatauv(L, sizeof *sig, 1);
    memset(sig, 0, sizeof *sig);
    sig->st = st;
    sig->kind = kind;
    luaL_setmetatable(L, LPS_SIGNAL);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    st->signal_ref[kind] = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, signal_names[kind]); /* module.IssueSignal = … */
}

/* A metatable with methods under __index (liolib.c createmeta), st as upvalue. */
static void create_meta(lua_State *L, const char *name, const luaL_Reg *meta,
                        const luaL_Reg *methods)
{
    if (!luaL_newmetatable(L, name)) { /* a second instance of the module: shared */
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, -2); /* st */
    luaL_setfuncs(L, meta, 1);
    if (methods) {
        lua_newtable(L);
        lua_pushvalue(L, -3);
        luaL_setfuncs(L, methods, 1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}

static const luaL_Reg signal_meta[] = {{"__tostring", s_tostring}, {NULL, NULL}};
static const luaL_Reg signal_methods[] = {{"Connect", s_connect}, {NULL, NULL}};
static const luaL_Reg connection_meta[] = {{"__index", c_index},
                                           {"__gc", c_gc},
                                           {"__close", c_disconnect},
                                           {"__tostring", c_tostring},
                                           {NULL, NULL}};

void lps__signal_open(lua_State *L, lps_state *st)
{
    (void)st;
    create_meta(L, LPS_SIGNAL, signal_meta, signal_methods);
    create_meta(L, LPS_CONNECTION, connection_meta, NULL);
}

void lps__signals_new(lua_State *L, lps_state *st)
{
    for (int k = 0; k < SIG_COUNT; k++)
        make_signal(L, st, (lps_signal_kind)k);
}

int lps__signals_connect(lps_state *st, ps_service *service)
{
    int rc = ps_service_issue_signal_connect(NULL, service, on_issue, st, NULL);
    if (rc == PS_OK)
        rc = ps_service_corruption_signal_connect(NULL, service, on_corruption, st, NULL);
    if (rc == PS_OK)
        rc = ps_service_critical_state_signal_connect(NULL, service, on_critical, st,
                                                      NULL);
    return rc;
}
