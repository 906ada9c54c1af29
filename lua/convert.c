/*
 * convert.c — Lua values ⇄ JSON, the way Roblox's DataStore stores tables: sequences
 * become arrays, string-keyed tables objects, integers stay integers and floats reals.
 * What the store cannot hold (functions, userdata, threads, cycles, NaN, infinities,
 * mixed, sparse or non-string keys, invalid UTF-8) fails with a message naming the
 * path, e.g. "Data.Inventory[3] is a function".
 *
 * Lua → JSON never raises (it runs inside the library's before-save hook, where a
 * longjmp would cross C frames): it only uses API calls that cannot fail, and checks
 * the stack with lua_checkstack.
 */
#include "lps.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 200
#define PATH_CAP 320
#define KEY_SHOWN 40

typedef struct encoder {
    lua_State *L;
    char path[PATH_CAP];
    size_t path_len;
    const void *ancestors[MAX_DEPTH]; /* tables on the current path: cycles */
    size_t ancestor_len[MAX_DEPTH];   /* path length of each */
    int depth;
    size_t nodes; /* values converted so far */
    char *err;
    size_t errlen;
} encoder;

/* A table referenced twice is converted twice (JSON has no references), so a small
 * Lua value can expand exponentially: stop once the output could not fit the store's
 * 4 MB document limit anyway (every JSON value takes at least one byte). */
#define MAX_NODES (4u * 1024u * 1024u)

/* ---- the path of the value being converted ----------------------------------------- */

static void path_append(encoder *e, const char *text)
{
    size_t n = strlen(text);
    if (e->path_len + n >= PATH_CAP - 4) {
        if (e->path_len < PATH_CAP - 4) /* mark the cut once */
            memcpy(e->path + e->path_len, "...", 4);
        e->path_len = PATH_CAP - 1;
        return;
    }
    memcpy(e->path + e->path_len, text, n + 1);
    e->path_len += n;
}

static void path_index(encoder *e, lua_Integer i)
{
    char buf[32];
    snprintf(buf, sizeof buf, "[%lld]", (long long)i);
    path_append(e, buf);
}

static int is_identifier(const char *s, size_t n)
{
    if (n == 0 || n > KEY_SHOWN || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* .Name for identifier keys, ["any key"] (escaped, shortened) for the others. */
static void path_key(encoder *e, const char *s, size_t n)
{
    char buf[KEY_SHOWN * 4 + 16];
    size_t o = 0;
    if (is_identifier(s, n)) {
        buf[o++] = '.';
        memcpy(buf + o, s, n);
        o += n;
    } else {
        buf[o++] = '[';
        buf[o++] = '"';
        for (size_t i = 0; i < n && i < KEY_SHOWN; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '"' || c == '\\')
                o += (size_t)snprintf(buf + o, 4, "\\%c", c);
            else if (c < 32 || c == 127)
                o += (size_t)snprintf(buf + o, 5, "\\%d", c);
            else
                buf[o++] = (char)c;
        }
        if (n > KEY_SHOWN)
            o += (size_t)snprintf(buf + o, 4, "...");
        buf[o++] = '"';
        buf[o++] = ']';
    }
    buf[o] = '\0';
    path_append(e, buf);
}

static void path_cut(encoder *e, size_t len)
{
    e->path_len = len;
    e->path[len] = '\0';
}

static json_t *fail(encoder *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *fail(encoder *e, const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(e->err, e->errlen, "%s %s", e->path, what);
    return NULL;
}

/* ---- Lua to JSON ------------------------------------------------------------------- */

static json_t *encode_value(encoder *e, int idx, lps_root root);

typedef struct table_shape {
    lua_Integer count, ints, strings, max_int, min_int;
} table_shape;

/* Counts the keys; fails on keys the store cannot hold. Leaves the stack as it was. */
static int table_classify(encoder *e, int idx, table_shape *s)
{
    lua_State *L = e->L;
    memset(s, 0, sizeof *s);
    s->min_int = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        s->count++;
        if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            s->ints++;
            if (k > s->max_int)
                s->max_int = k;
            if (k < s->min_int)
                s->min_int = k;
        } else if (kt == LUA_TNUMBER) {
            double k = lua_tonumber(L, -2);
            lua_pop(L, 2);
            fail(e, "has a non-integer number key (%g)", k);
            return -1;
        } else if (kt == LUA_TSTRING) {
            s->strings++;
        } else {
            lua_pop(L, 2);
            fail(e, "has a %s key; only string keys and sequences can be saved",
                 lua_typename(L, kt));
            return -1;
        }
        lua_pop(L, 1);
    }
    if (s->ints && s->strings) {
        fail(e, "mixes number keys and string keys");
        return -1;
    }
    if (s->ints && s->min_int < 1) {
        fail(e, "has the index %lld; arrays start at 1", (long long)s->min_int);
        return -1;
    }
    if (s->ints && s->max_int != s->count) {
        fail(e, "is a sparse array (index %lld, but %lld entries)", (long long)s->max_int,
             (long long)s->count);
        return -1;
    }
    return 0;
}

static json_t *encode_array(encoder *e, int idx, lua_Integer n)
{
    json_t *arr = json_array();
    size_t len = e->path_len;
    for (lua_Integer i = 1; arr && i <= n; i++) {
        lua_rawgeti(e->L, idx, i);
        path_index(e, i);
        json_t *v = encode_value(e, lua_gettop(e->L), ROOT_VALUE);
        lua_pop(e->L, 1);
        path_cut(e, len);
        if (!v || json_array_append_new(arr, v)) {
            json_decref(arr);
            return v ? fail(e, "could not be stored (out of memory)") : NULL;
        }
    }
    return arr ? arr : fail(e, "could not be stored (out of memory)");
}

static json_t *encode_object(encoder *e, int idx)
{
    lua_State *L = e->L;
    json_t *obj = json_object();
    size_t len = e->path_len;
    if (!obj)
        return fail(e, "could not be stored (out of memory)");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t kn;
        const char *k = lua_tolstring(L, -2, &kn); /* a string: no conversion */
        path_key(e, k, kn);
        json_t *v = encode_value(e, lua_gettop(L), ROOT_VALUE);
        if (v && json_object_setn_new(obj, k, kn, v)) {
            v = fail(e, "is under a key that is not valid UTF-8");
        }
        path_cut(e, len);
        lua_pop(L, 1);
        if (!v) {
            lua_pop(L, 1);
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *encode_table(encoder *e, int idx, lps_root root)
{
    const void *self = lua_topointer(e->L, idx);
    for (int i = 0; i < e->depth; i++) {
        if (e->ancestors[i] == self) {
            char back[PATH_CAP];
            snprintf(back, sizeof back, "%.*s", (int)e->ancestor_len[i], e->path);
            return fail(e, "is a cycle: it is the table %s again", back);
        }
    }
    if (e->depth >= MAX_DEPTH || !lua_checkstack(e->L, 6))
        return fail(e, "is nested more than %d tables deep", MAX_DEPTH);
    table_shape s;
    if (table_classify(e, idx, &s) != 0)
        return NULL;
    if (root == ROOT_OBJECT && s.ints)
        return fail(e, "is a sequence; it must be a table with string keys");
    e->ancestors[e->depth] = self;
    e->ancestor_len[e->depth] = e->path_len;
    e->depth++;
    json_t *out;
    if (s.count == 0)
        out = root == ROOT_VALUE ? json_array() : json_object();
    else if (s.ints)
        out = encode_array(e, idx, s.count);
    else
        out = encode_object(e, idx);
    e->depth--;
    return out;
}

static json_t *encode_value(encoder *e, int idx, lps_root root)
{
    lua_State *L = e->L;
    int t = lua_type(L, idx);
    if (++e->nodes > MAX_NODES)
        return fail(e, "is too large to store (over %u values)", MAX_NODES);
    if (root != ROOT_VALUE && t != LUA_TTABLE)
        return t == LUA_TNIL ? fail(e, "is nil, not a table")
                             : fail(e, "is a %s, not a table", lua_typename(L, t));
    switch (t) {
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        double d = lua_tonumber(L, idx);
        if (isnan(d))
            return fail(e, "is NaN");
        if (isinf(d))
            return fail(e, "is %sinfinite", d < 0 ? "negative " : "");
        return json_real(d);
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        json_t *j = json_stringn(s, n);
        return j ? j : fail(e, "is a string that is not valid UTF-8");
    }
    case LUA_TTABLE:
        return encode_table(e, lua_absindex(L, idx), root);
    default:
        return fail(e, "is a %s", lua_typename(L, t));
    }
}

json_t *lps__to_json(lua_State *L, int idx, lps_root root, const char *root_name,
                     char *err, size_t errlen)
{
    encoder e;
    e.L = L;
    e.path_len = 0;
    e.path[0] = '\0';
    e.depth = 0;
    e.nodes = 0;
    e.err = err;
    e.errlen = errlen;
    path_append(&e, root_name);
    if (!lua_checkstack(L, 6)) {
        snprintf(err, errlen, "%s could not be converted (Lua stack overflow)",
                 root_name);
        return NULL;
    }
    return encode_value(&e, lua_absindex(L, idx), root);
}

/* ---- JSON to Lua ------------------------------------------------------------------- */

void lps__push_json(lua_State *L, const json_t *json)
{
    luaL_checkstack(L, 4, "stored value nested too deeply");
    switch (json ? json_typeof(json) : JSON_NULL) {
    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *value;
        lua_createtable(L, 0, (int)json_object_size(json));
        json_object_keylen_foreach((json_t *)json, key, key_len, value)
        {
            if (json_is_null(value))
                continue; /* Lua tables cannot hold nil */
            lua_pushlstring(L, key, key_len);
            lps__push_json(L, value);
            lua_rawset(L, -3);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(json);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            json_t *value = json_array_get(json, i);
            if (json_is_null(value))
                continue;
            lps__push_json(L, value);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(json), json_string_length(json));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(json));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(json));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    default:
        lua_pushnil(L);
    }
}
