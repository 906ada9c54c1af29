/*
 * lps.h — internals shared by the files of the Lua 5.4 binding (lua/). Nothing here is
 * exported: the module's only public symbol is luaopen_profileservice.
 *
 * Threads: every function runs on the host thread, the one running the Lua state,
 * except lps__clock_now, which the library's workers call too.
 */
#ifndef LPS_H
#define LPS_H

#include <profileservice.h>
#include <profileservice/backend.h>

#include <lauxlib.h>
#include <lua.h>

#include <stdatomic.h>

#define LPS_STATE "profileservice.State"
#define LPS_STORE "profileservice.ProfileStore"
#define LPS_PROFILE "profileservice.Profile"
#define LPS_GU "profileservice.GlobalUpdates"
#define LPS_SIGNAL "profileservice.Signal"
#define LPS_CONNECTION "profileservice.Connection"

#define LPS_MESSAGE_MAX 512

typedef enum lps_clock_mode {
    CLOCK_SYSTEM,
    CLOCK_FUNCTION,
    CLOCK_VIRTUAL
} lps_clock_mode;
typedef enum lps_signal_kind {
    SIG_ISSUE,
    SIG_CORRUPTION,
    SIG_CRITICAL,
    SIG_COUNT
} lps_signal_kind;

typedef struct lps_waiter lps_waiter;
typedef struct lps_profile lps_profile;

/* A doubly linked list of waiters (pending, or ready to resume). */
typedef struct lps_wlist {
    lps_waiter *head, *tail;
} lps_wlist;

/* The module's state: one per Lua state, a full userdata kept as upvalue 1 of every
 * function of the module and of every method. Its __gc shuts the service down. */
typedef struct lps_state {
    lua_State *L; /* the thread that entered the binding last: callbacks run on it */
    ps_service *service; /* created lazily by lps__service() */
    int locked_early;    /* Shutdown() before the service existed */
    int callback_depth;  /* > 0 while a Lua listener, handler or clock function runs */
    int closed;          /* __gc ran */

    ps_config config; /* ProfileService.Configure{…} */
    char *store_url, *job_id;
    lps_clock_mode clock_mode;
    int clock_ref, sleep_ref; /* CLOCK_FUNCTION: Lua functions in the registry */
    _Atomic double now;       /* what the library's clock returns (not CLOCK_SYSTEM) */

    int signal_ref[SIG_COUNT]; /* the three Signal userdata */
    int actives_ref; /* registry table: lightuserdata(lps_profile) -> active Profile */
    int stores_ref;  /* registry table: store name -> ProfileStore userdata */

    lps_wlist pending, ready; /* coroutines waiting on an async call */
    lps_profile *profiles;    /* wrapped loaded profiles, for the MetaData refresh */
    ps_profile **deferred;    /* handles collected inside a callback, freed later */
    size_t deferred_count, deferred_cap;
} lps_state;

/* Profile userdata. Data and MetaData are Lua tables kept in the registry; the
 * before-save hook copies them into the C profile right before each save. */
struct lps_profile {
    ps_profile *p; /* NULL once collected */
    lps_state *st;
    int is_view;
    int data_ref, meta_ref;      /* registry refs (LUA_REFNIL when absent) */
    ps_connection *release_conn; /* our own release listener */
    json_t *seen[6];             /* MetaData values last copied into Lua (references) */
    lps_profile *next, *prev;    /* st->profiles (loaded profiles only) */
};

/* ---- profileservice.c --------------------------------------------------------- */

/* The state (upvalue 1) of the running module function; records L as the thread
 * callbacks run on. Methods do the same from their object (check_profile, …). */
lps_state *lps__enter(lua_State *L);
/* The service, created with the configured settings on first use; raises on error. */
ps_service *lps__service(lua_State *L, lps_state *st);
/* Raises unless blocking calls, Update and Shutdown are allowed here. */
void lps__check_can_block(lua_State *L, lps_state *st, const char *what);
/* Copies the Lua clock's value into the library's clock (CLOCK_FUNCTION). */
void lps__refresh_clock(lps_state *st);
/* Runs fn(L) with a light userdata argument, protected, on st->L, as a callback:
 * errors are copied to err (with a traceback when traceback is set). */
int lps__protect(lps_state *st, lua_CFunction fn, void *arg, char *err, size_t errlen,
                 int traceback);
/* Reports an error of a listener or coroutine on stderr; the service carries on. */
void lps__report(const char *what, const char *message);
/* Raises a Lua error with ps_error_last()'s message. */
int lps__raise_last(lua_State *L);
/* Frees a profile handle now, or later when inside a callback (a collected
 * userdata's __gc can run in the middle of a library call). */
void lps__free_profile(lps_state *st, ps_profile *p);
void lps__free_deferred(lps_state *st);

/* ---- signal.c ------------------------------------------------------------------- */

/* The Signal and Connection metatables. */
void lps__signal_open(lua_State *L, lps_state *st);
/* The three Signal objects, set as fields of the module table on the stack top. */
void lps__signals_new(lua_State *L, lps_state *st);
/* Connects the library's signals of @p service to the Lua listeners. */
int lps__signals_connect(lps_state *st, ps_service *service);
/* Calls the Lua listeners of a service signal; @p push pushes the arguments. */
void lps__emit(lps_state *st, lps_signal_kind kind, int (*push)(lua_State *L, void *arg),
               void *arg);
/* A listener of a C signal: pushes a Connection userdata and returns the record to
 * pass as the connect call's userdata, with lps__record_free as its free_userdata
 * (or to free when the connect call fails). */
typedef struct lps_record lps_record;
lps_record *lps__record_new(lua_State *L, lps_state *st, int fn_index);
void lps__record_free(void *record);
void lps__record_attach(lps_record *record, ps_connection *connection);
/* Calls the record's Lua function with the pushed arguments, reporting errors. */
void lps__record_call(lps_record *record, const char *what,
                      int (*push)(lua_State *L, void *arg), void *arg);

/* ---- convert.c ------------------------------------------------------------------ */

/* How the value at the root of a conversion may look. */
typedef enum lps_root {
    ROOT_OBJECT, /* Data, MetaTags: a table with string keys; an empty table is {} */
    ROOT_TABLE,  /* update data: an object or an array; an empty table is {} */
    ROOT_VALUE   /* a meta tag value: anything the store can hold */
} lps_root;

/* Lua value at @p idx → new JSON. Never raises. On failure returns NULL and writes
 * "PATH is a function" (and so on) into @p err, PATH starting with @p root_name. */
json_t *lps__to_json(lua_State *L, int idx, lps_root root, const char *root_name,
                     char *err, size_t errlen);
/* Pushes the Lua value of @p json (borrowed); nil for NULL. May raise (memory). */
void lps__push_json(lua_State *L, const json_t *json);

/* ---- store.c ------------------------------------------------------------------- */

void lps__store_open(lua_State *L, lps_state *st);
/* GetProfileStore(name, template). */
int lps__get_profile_store(lua_State *L);
/* Frees the waiters left when the state closes. */
void lps__waiters_free(lps_state *st);
/* Resumes the coroutines whose async call finished by then (Update, Shutdown). */
void lps__resume_ready(lua_State *L, lps_state *st);

/* ---- profile.c ----------------------------------------------------------------- */

void lps__profile_open(lua_State *L, lps_state *st);
/* Pushes a Profile userdata owning @p p (loaded or view). Raises on memory errors;
 * @p p is then freed. */
void lps__push_profile(lua_State *L, lps_state *st, ps_profile *p, int is_view);
/* Pushes a read-only GlobalUpdates userdata owning @p gu. */
void lps__push_result_gu(lua_State *L, lps_state *st, ps_global_updates *gu);
/* Pushes a GlobalUpdates userdata for an update handler; invalid after the handler. */
void *lps__push_handler_gu(lua_State *L, lps_state *st, ps_global_updates *gu);
void lps__invalidate_gu(void *handler_gu);
/* Copies what the library now says about each wrapped profile (SessionLoadCount,
 * ActiveSession, MetaTagsLatest, …) into its Lua MetaData table. */
void lps__refresh_all_meta(lps_state *st);
/* Copies a profile's Lua Data and MetaTags into the C profile. @return 0; -1 (message
 * in err); -2 when Profile.Data is not a table. */
int lps__profile_sync(lps_state *st, lps_profile *lp, char *err, size_t errlen);

#endif /* LPS_H */
