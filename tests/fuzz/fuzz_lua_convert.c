/*
 * fuzz_lua_convert.c — libFuzzer target for the Lua binding's JSON ⇄ Lua conversion
 * (lua/convert.c: lps__push_json and lps__to_json).
 *
 * Two modes, chosen by the first byte:
 *  - JSON (any other first byte): the input is parsed as JSON, pushed as a Lua value
 *    and converted back for each root kind. The result is compared with a reference
 *    model of the documented mapping (nulls are nil, so they drop out of objects and
 *    trailing array slots; an empty table is [] below the root and {} at an object
 *    or table root; a hole in an array makes it sparse and unsaveable; tables nest at
 *    most 200 deep). Success and failure must agree with the model, and a second
 *    round trip must give the same JSON.
 *  - Lua (first byte 0x01): the rest drives a tiny stack machine that builds hostile
 *    Lua values (NaN, infinities, invalid UTF-8 strings and keys, float keys, mixed
 *    and sparse tables, cycles, functions). lps__to_json must fail with a message or
 *    give JSON that survives a second round trip; it must never raise or leave the
 *    Lua stack changed.
 */
#include "lps.h"

#include <lualib.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_lua_convert"
#include "fuzz_common.h"

#define MAX_DEPTH 200 /* convert.c's limit on nested tables */

static lua_State *L;

/* ---- the reference model of the mapping ------------------------------------------ */

/* The JSON that JSON → Lua → JSON should give for @p j, or NULL when the conversion
 * back must fail. @p depth counts the tables above (the root table is depth 0). */
static json_t *model(const json_t *j, lps_root root, int depth)
{
    if (json_is_null(j))
        return NULL; /* nil is not a value the store can hold */
    if (!json_is_object(j) && !json_is_array(j))
        return root == ROOT_VALUE ? json_deep_copy(j) : NULL;
    if (depth >= MAX_DEPTH)
        return NULL;
    if (json_is_object(j)) {
        json_t *out = json_object(), *v;
        const char *key;
        size_t key_len;
        json_object_keylen_foreach((json_t *)j, key, key_len, v)
        {
            if (json_is_null(v))
                continue;
            json_t *m = model(v, ROOT_VALUE, depth + 1);
            if (!m) {
                json_decref(out);
                return NULL;
            }
            json_object_setn_new(out, key, key_len, m);
        }
        if (json_object_size(out) == 0 && root == ROOT_VALUE) {
            json_decref(out);
            return json_array(); /* an empty table below the root is [] */
        }
        return out;
    }
    size_t n = json_array_size(j), count = 0, last = 0;
    for (size_t i = 0; i < n; i++)
        if (!json_is_null(json_array_get(j, i)))
            count++, last = i + 1;
    if (count == 0)
        return root == ROOT_VALUE ? json_array() : json_object();
    if (root == ROOT_OBJECT || last != count)
        return NULL; /* a sequence where an object is wanted, or a hole */
    json_t *out = json_array();
    for (size_t i = 0; i < count; i++) {
        json_t *m = model(json_array_get(j, i), ROOT_VALUE, depth + 1);
        if (!m) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, m);
    }
    return out;
}

/* ---- protected calls --------------------------------------------------------------- */

static int push_protected(lua_State *l)
{
    lps__push_json(l, lua_touserdata(l, 1));
    return 1;
}

/* Pushes the Lua value of @p j. @return 0, or -1 when pushing raised (memory). */
static int push(const json_t *j)
{
    lua_pushcfunction(L, push_protected);
    lua_pushlightuserdata(L, (void *)j);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* lps__to_json on the top value; checks it leaves the stack alone and explains a
 * failure. @return new JSON or NULL. */
static json_t *to_json(lps_root root, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    err[0] = '\0';
    json_t *out = lps__to_json(L, -1, root, "Data", err, errlen);
    CHECK(lua_gettop(L) == top, "to_json changed the stack: %d -> %d", top,
          lua_gettop(L));
    if (!out)
        CHECK(strncmp(err, "Data", 4) == 0 && strlen(err) > 5,
              "failure without a message naming the path: \"%s\"", err);
    return out;
}

/* A successful conversion converts again to the same JSON. */
static void check_stable(const json_t *out, lps_root root)
{
    char err[512];
    if (push(out) != 0)
        return;
    json_t *again = to_json(root, err, sizeof err);
    CHECK(again != NULL, "a converted value does not convert again: %s", err);
    CHECK(fuzz_same(again, out), "second round trip changed the value");
    json_decref(again);
    lua_pop(L, 1);
}

/* ---- JSON mode --------------------------------------------------------------------- */

static void json_mode(const uint8_t *data, size_t size)
{
    static const lps_root roots[] = {ROOT_VALUE, ROOT_TABLE, ROOT_OBJECT};
    json_t *j =
        json_loadb((const char *)data, size,
                   JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return;
    if (push(j) == 0) {
        for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
            char err[512];
            json_t *want = model(j, roots[i], 0);
            json_t *got = to_json(roots[i], err, sizeof err);
            CHECK(!want == !got, "root kind %d: model says %s, conversion %s (%s)",
                  (int)roots[i], want ? "ok" : "fail", got ? "ok" : "failed", err);
            if (got) {
                CHECK(fuzz_same(want, got), "root kind %d: not the model's value",
                      (int)roots[i]);
                check_stable(got, roots[i]);
            }
            json_decref(want);
            json_decref(got);
        }
        lua_pop(L, 1);
    }
    json_decref(j);
}

/* ---- Lua mode: a stack machine building hostile values ----------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static int take(reader *r, void *out, size_t len)
{
    if (r->n < len)
        return 0;
    memcpy(out, r->p, len);
    r->p += len;
    r->n -= len;
    return 1;
}

static int noop(lua_State *l)
{
    (void)l;
    return 0;
}

/* Runs the program; leaves the value to convert on top. Operands are bounded so a
 * program cannot build huge values. */
static void build(reader *r, int base)
{
    uint8_t op;
    int steps = 0;
    while (take(r, &op, 1) && steps++ < 256 && lua_checkstack(L, 4)) {
        int top = lua_gettop(L) - base;
        switch (op % 12) {
        case 0: { /* integer */
            int64_t v = 0;
            take(r, &v, sizeof v);
            lua_pushinteger(L, (lua_Integer)v);
            break;
        }
        case 1: { /* float: any bit pattern, NaN and infinities included */
            double d = 0;
            take(r, &d, sizeof d);
            lua_pushnumber(L, d);
            break;
        }
        case 2: { /* string of 0..15 arbitrary bytes (maybe not UTF-8) */
            uint8_t len = 0;
            char s[16];
            take(r, &len, 1);
            len %= 16;
            if (!take(r, s, len))
                len = 0;
            lua_pushlstring(L, s, len);
            break;
        }
        case 3:
            lua_pushboolean(L, op & 0x10);
            break;
        case 4:
            lua_newtable(L);
            break;
        case 5: /* t[k] = v with t, k, v the top three */
            if (top >= 3 && lua_istable(L, -3) && !lua_isnil(L, -2) &&
                !(lua_type(L, -2) == LUA_TNUMBER && isnan(lua_tonumber(L, -2))))
                lua_rawset(L, -3);
            break;
        case 6: /* t[#t + 1] = v */
            if (top >= 2 && lua_istable(L, -2))
                lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            break;
        case 7: /* copy a value below (a table twice on the path makes a cycle) */
            if (top >= 1)
                lua_pushvalue(L, -1 - (int)(op >> 4) % top);
            break;
        case 8:
            lua_pushcfunction(L, noop);
            break;
        case 9:
            if (top >= 1)
                lua_pop(L, 1);
            break;
        case 10:
            lua_pushnil(L);
            break;
        default: { /* t[i] = v at a small index, maybe making holes */
            if (top >= 2 && lua_istable(L, -2))
                lua_rawseti(L, -2, (lua_Integer)(op >> 4) - 2);
            break;
        }
        }
    }
}

/* Values in the tree that converting the value at @p idx walks (a table reachable
 * twice is walked twice), counting down *budget; stops at 0. Cycles stop at the
 * depth limit. */
static void tree_size(int idx, int depth, long *budget)
{
    if (--*budget <= 0 || !lua_istable(L, idx) || depth > MAX_DEPTH ||
        !lua_checkstack(L, 3))
        return;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (*budget > 0 && lua_next(L, idx)) {
        tree_size(-1, depth + 1, budget);
        lua_pop(L, 1);
    }
    if (*budget <= 0)
        lua_settop(L, idx); /* lua_next was cut short: drop its key */
}

/* KNOWN BUG (reported in issue #8): lps__to_json has no bound on the size of what
 * it builds, and a table shared by reference is converted once per reference, so a
 * DAG of n levels of two references each takes 2^n steps and memory (the host
 * freezes inside the before-save hook). Until convert.c stops at a budget, values
 * whose tree is over this size are skipped so the smoke run stays deterministic;
 * the reproducer is tests/fuzz/known/fuzz_lua_convert/dag_blowup. Build with
 * -DFUZZ_LUA_NO_SIZE_GUARD to fuzz without the guard. */
#define TREE_GUARD 200000L

static void lua_mode(const uint8_t *data, size_t size)
{
    static const lps_root roots[] = {ROOT_VALUE, ROOT_TABLE, ROOT_OBJECT};
    reader r = {data, size};
    uint8_t which = 0;
    int base = lua_gettop(L);
    char err[512];

    take(&r, &which, 1);
    build(&r, base);
    if (lua_gettop(L) == base)
        lua_pushnil(L);
    lps_root root = roots[which % 3];
#ifndef FUZZ_LUA_NO_SIZE_GUARD
    long budget = TREE_GUARD;
    int top = lua_gettop(L);
    tree_size(-1, 0, &budget);
    lua_settop(L, top);
    if (budget <= 0) {
        lua_settop(L, base);
        return;
    }
#endif
    json_t *out = to_json(root, err, sizeof err);
    if (out) {
        char *text = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
        CHECK(text != NULL, "converted value is not encodable");
        free(text);
        if (root != ROOT_VALUE)
            CHECK(json_is_object(out) || (root == ROOT_TABLE && json_is_array(out)),
                  "root kind %d gave a %d", (int)root, (int)json_typeof(out));
        check_stable(out, root);
        json_decref(out);
    }
    lua_settop(L, base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    return L ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == 0x01)
        lua_mode(data + 1, size - 1);
    else
        json_mode(data, size);
    CHECK(lua_gettop(L) == 0, "stack not balanced: %d", lua_gettop(L));
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
