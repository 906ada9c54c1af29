/*
 * lua_host.c — runs a Lua script the way the lua5.4 interpreter does (`lua_host
 * SCRIPT ARGS…`, with the same `arg` table), for the sanitizer runs: an ASan build of
 * profileservice.so cannot be loaded into the stock, uninstrumented interpreter, so
 * the tests run under this host, built with the same flags. It links liblua5.4, whose
 * symbols the module resolves at load time. Unlike `lua5.4`, it always closes the
 * state at the end, so every __gc (and the module's shutdown) runs.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdio.h>

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create a Lua state\n", argv[0]);
        return 1;
    }
    luaL_openlibs(L);
    /* arg[-1] = this host, arg[0] = the script, arg[1..] = its arguments (lua.c). */
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, traceback);
    int rc = luaL_loadfile(L, argv[1]);
    if (rc == LUA_OK) {
        for (int i = 2; i < argc; i++)
            lua_pushstring(L, argv[i]);
        rc = lua_pcall(L, argc - 2, 0, 1);
    }
    if (rc != LUA_OK)
        fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    lua_close(L);
    return rc == LUA_OK ? 0 : 1;
}
