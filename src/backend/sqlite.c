/*
 * sqlite.c — the embedded default backend, "sqlite:PATH".
 *
 * One database file in WAL mode, shared by the threads of this process and by other
 * processes on the same machine (WAL needs shared memory: not on network file systems).
 *
 * Connections: a small pool. A caller takes an idle connection (or opens one), uses it
 * for one member call and gives it back, so concurrent callers never share a
 * connection and never wait on each other in this process: readers run in parallel
 * (WAL), and writers queue on SQLite's own write lock, the same lock that orders us
 * against other processes. Each connection caches its prepared statements. At most
 * POOL_IDLE_MAX idle connections are kept; the pool never grows past the number of
 * simultaneous callers. A nested call from inside a transform or a list callback just
 * takes a second connection.
 *
 * Durability: synchronous=FULL. In WAL mode NORMAL survives a crash of the process
 * but a power loss or kernel crash may roll back the last commits — a save that was
 * reported done, a global update that was locked or cleared. The design promises that
 * nothing written before a successful save is lost, so every commit syncs the WAL.
 * The price is one fsync per write; a server writes each profile every 30 s.
 *
 * update is an optimistic compare-and-set on a version column (see cas_write); the
 * transform runs with no transaction open, so a slow transform never blocks writers.
 */
#include "backends.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCHEMA_VERSION 1        /* PRAGMA user_version of the layout below */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define BUSY_TIMEOUT_MS 10000   /* how long a writer queues for the write lock */
#define POOL_IDLE_MAX 8

static const char SCHEMA_SQL[] =
    "CREATE TABLE profiles(store TEXT NOT NULL, key TEXT NOT NULL,"
    " version INTEGER NOT NULL, doc BLOB NOT NULL,"
    " PRIMARY KEY(store, key)) WITHOUT ROWID;"
    "CREATE TABLE quarantine(id INTEGER PRIMARY KEY AUTOINCREMENT, store TEXT NOT NULL,"
    " key TEXT NOT NULL, saved_at REAL NOT NULL, reason TEXT NOT NULL,"
    " doc BLOB NOT NULL);";

enum { S_GET, S_BEGIN, S_COMMIT, S_ROLLBACK, S_UPDATE, S_INSERT, S_QUARANTINE,
       S_DELETE, S_LIST, S_QLIST, S_COUNT };

/* Every value is a bound parameter; no SQL is ever built from data. */
static const char *const STMT_SQL[S_COUNT] = {
    [S_GET] = "SELECT version, doc FROM profiles WHERE store = ?1 AND key = ?2",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_UPDATE] = "UPDATE profiles SET version = version + 1, doc = ?1"
                 " WHERE store = ?2 AND key = ?3 AND version = ?4",
    /* A new row starts at a random version, so a key that was removed and created
     * again never matches a version an in-flight update read before (no ABA). */
    [S_INSERT] = "INSERT INTO profiles(store, key, version, doc)"
                 " VALUES(?1, ?2, (random() & 4611686018427387903) + 1, ?3)"
                 " ON CONFLICT(store, key) DO NOTHING",
    [S_QUARANTINE] = "INSERT INTO quarantine(store, key, saved_at, reason, doc)"
                     " VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_DELETE] = "DELETE FROM profiles WHERE store = ?1 AND key = ?2",
    /* Prefix as a key range, so the primary key index serves it and bytes compare as
     * bytes (substr/LIKE count characters and fold case). */
    [S_LIST] = "SELECT key FROM profiles WHERE store = ?1 AND key >= ?2"
               " AND (?3 IS NULL OR key < ?3) ORDER BY key",
    [S_QLIST] = "SELECT id, store, key, saved_at, reason, doc FROM quarantine"
                " WHERE (?1 IS NULL OR store = ?1) AND (?2 IS NULL OR key = ?2)"
                " ORDER BY id",
};

typedef struct conn {
    struct conn *next; /* idle list */
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT]; /* prepared on first use */
} conn;

typedef struct sqlite_backend {
    ps_backend parent;
    pthread_mutex_t lock; /* guards idle and nidle only; never held during I/O */
    conn *idle;
    int nidle;
    char *path;
} sqlite_backend;

/* Records sqlite's message for @p what. Out-of-memory keeps its own code. */
static int db_error(sqlite3 *db, const char *what)
{
    if (db && sqlite3_errcode(db) == SQLITE_NOMEM)
        return ps__error_oom();
    return ps__error_set(PS_EBACKEND, "sqlite %s: %s", what,
                         db ? sqlite3_errmsg(db) : "out of memory");
}

static int stmt(sqlite3_stmt **out, conn *c, int which)
{
    if (!c->stmt[which] &&
        sqlite3_prepare_v3(c->db, STMT_SQL[which], -1, SQLITE_PREPARE_PERSISTENT,
                           &c->stmt[which], NULL) != SQLITE_OK)
        return db_error(c->db, "prepare");
    *out = c->stmt[which];
    return PS_OK;
}

/* Resets a statement after use: ends its implicit read transaction, drops bindings. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows (BEGIN, COMMIT, ROLLBACK). */
static int exec_stmt(conn *c, int which, const char *what)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(&st, c, which);
    if (rc != PS_OK)
        return rc;
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(c->db, what);
    stmt_done(st);
    return rc;
}

static void conn_close(conn *c)
{
    if (!c)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(c->stmt[i]);
    sqlite3_close(c->db);
    free(c);
}

/* Opens one pooled connection with this backend's per-connection settings. */
static int conn_open(conn **out, const char *path)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return ps__error_oom();
    int rc = PS_OK;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK)
        rc = db_error(c->db, "open");
    else if (sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS) != SQLITE_OK ||
             sqlite3_exec(c->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL))
        rc = db_error(c->db, "configure");
    if (rc != PS_OK) {
        conn_close(c);
        return rc;
    }
    *out = c;
    return PS_OK;
}

/* Idle connection if there is one, else a new one. */
static int pool_acquire(conn **out, sqlite_backend *s)
{
    pthread_mutex_lock(&s->lock);
    conn *c = s->idle;
    if (c) {
        s->idle = c->next;
        s->nidle--;
    }
    pthread_mutex_unlock(&s->lock);
    if (c) {
        *out = c;
        return PS_OK;
    }
    return conn_open(out, s->path);
}

static void pool_release(sqlite_backend *s, conn *c)
{
    /* Members end their transactions; this guards the pool against a path that
     * did not, so the next caller never inherits an open write lock. */
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_lock(&s->lock);
    if (s->nidle < POOL_IDLE_MAX) {
        c->next = s->idle;
        s->idle = c;
        s->nidle++;
        c = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    conn_close(c);
}

/* ---- get and update ------------------------------------------------------------ */

typedef struct cas_ctx {
    conn *c;
    const char *store;
    const char *key;
} cas_ctx;

/* The current row, outside any explicit transaction (the statement is atomic). */
static int cas_read(void *ctx, ps_bytes *current, int *present, int64_t *version)
{
    cas_ctx *x = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(&st, x->c, S_GET);
    if (rc != PS_OK)
        return rc;
    sqlite3_bind_text(st, 1, x->store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, x->key, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    *present = step == SQLITE_ROW;
    *version = 0;
    if (step == SQLITE_ROW) {
        *version = sqlite3_column_int64(st, 0);
        const void *blob = sqlite3_column_blob(st, 1);
        rc = ps_bytes_set(current, blob, blob ? (size_t)sqlite3_column_bytes(st, 1) : 0);
    } else if (step != SQLITE_DONE) {
        rc = db_error(x->c->db, "read");
    }
    stmt_done(st);
    return rc;
}

/* Binds and runs the CAS statement. @return PS_OK with *changed set, or an error. */
static int cas_statement(cas_ctx *x, const ps_write *w, int present, int64_t version,
                         int *changed)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(&st, x->c, present ? S_UPDATE : S_INSERT);
    if (rc != PS_OK)
        return rc;
    int i = 1;
    if (present)
        sqlite3_bind_blob64(st, i++, w->doc.data, w->doc.len, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, x->store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, i++, x->key, -1, SQLITE_STATIC);
    if (present)
        sqlite3_bind_int64(st, i++, version);
    else
        sqlite3_bind_blob64(st, i++, w->doc.data, w->doc.len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(x->c->db, present ? "update" : "insert");
    *changed = sqlite3_changes(x->c->db);
    stmt_done(st);
    return rc;
}

static int quarantine_insert(cas_ctx *x, const ps_bytes *old, const char *reason)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(&st, x->c, S_QUARANTINE);
    if (rc != PS_OK)
        return rc;
    sqlite3_bind_text(st, 1, x->store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, x->key, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, ps__backend_now());
    sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 5, old->data, old->len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(x->c->db, "quarantine");
    stmt_done(st);
    return rc;
}

/* One write transaction: the version-checked UPDATE (or INSERT of an absent key that
 * does nothing when another writer created it first) and the quarantine copy commit
 * together or not at all. BEGIN IMMEDIATE takes the write lock up front, waiting up
 * to BUSY_TIMEOUT_MS for other threads and processes. */
static int cas_write(void *ctx, ps_write *w, const ps_bytes *current, int present,
                     int64_t version)
{
    cas_ctx *x = ctx;
    int changed = 0;
    int rc = exec_stmt(x->c, S_BEGIN, "begin");
    if (rc != PS_OK)
        return rc;
    rc = cas_statement(x, w, present, version, &changed);
    if (rc == PS_OK && changed == 0)
        rc = PS__CAS_RETRY;
    if (rc == PS_OK && present && w->quarantine)
        rc = quarantine_insert(x, current, w->reason);
    if (rc == PS_OK)
        rc = exec_stmt(x->c, S_COMMIT, "commit");
    if (rc != PS_OK && !sqlite3_get_autocommit(x->c->db)) {
        /* keep the first failure's message, not the rollback's */
        sqlite3_stmt *st = NULL;
        if (stmt(&st, x->c, S_ROLLBACK) == PS_OK) {
            sqlite3_step(st);
            stmt_done(st);
        }
    }
    return rc;
}

static int sqlite_get(ps_bytes *out, ps_backend *b, const char *store, const char *key)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "get: out is NULL");
    *out = (ps_bytes){NULL, 0};
    int rc = ps__backend_check_key("get", store, key);
    if (rc != PS_OK || !b)
        return rc != PS_OK ? rc : ps__error_set(PS_EINVAL, "get: backend is NULL");
    sqlite_backend *s = (sqlite_backend *)b;
    cas_ctx x = {NULL, store, key};
    if ((rc = pool_acquire(&x.c, s)) != PS_OK)
        return rc;
    int present = 0;
    int64_t version;
    rc = cas_read(&x, out, &present, &version);
    if (rc == PS_OK && !present)
        rc = ps__error_set(PS_ENOTFOUND, "key %s/%s not found", store, key);
    pool_release(s, x.c);
    return rc;
}

static int sqlite_update(ps_backend *b, const char *store, const char *key,
                         ps_transform_fn transform, void *userdata)
{
    static const ps__cas_ops ops = {cas_read, cas_write};
    int rc = ps__backend_check_key("update", store, key);
    if (rc != PS_OK)
        return rc;
    if (!b || !transform)
        return ps__error_set(PS_EINVAL, "update: %s is NULL",
                             b ? "transform" : "backend");
    sqlite_backend *s = (sqlite_backend *)b;
    cas_ctx x = {NULL, store, key};
    if ((rc = pool_acquire(&x.c, s)) != PS_OK)
        return rc;
    rc = ps__backend_cas(&ops, &x, store, key, transform, userdata);
    pool_release(s, x.c);
    return rc;
}

/* ---- list, remove, quarantine -------------------------------------------------- */

/* The smallest string above every string starting with @p prefix: drop trailing 0xFF
 * bytes, add one to the last byte. NULL result: no upper bound. */
static int prefix_upper(char **out, const char *prefix)
{
    size_t n = strlen(prefix);
    *out = NULL;
    while (n > 0 && (unsigned char)prefix[n - 1] == 0xFF)
        n--;
    if (n == 0)
        return PS_OK;
    char *hi = malloc(n + 1);
    if (!hi)
        return ps__error_oom();
    memcpy(hi, prefix, n);
    hi[n - 1] = (char)((unsigned char)hi[n - 1] + 1);
    hi[n] = '\0';
    *out = hi;
    return PS_OK;
}

/* Keys stream from the statement; @p fn may call this backend again (it gets another
 * pooled connection; WAL lets it write while this read is open). */
static int list_rows(conn *c, const char *store, const char *prefix, ps_key_fn fn,
                     void *userdata)
{
    char *hi = NULL;
    sqlite3_stmt *st = NULL;
    int rc = prefix_upper(&hi, prefix);
    if (rc == PS_OK)
        rc = stmt(&st, c, S_LIST);
    if (rc != PS_OK) {
        free(hi);
        return rc;
    }
    sqlite3_bind_text(st, 1, store, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
    if (hi)
        sqlite3_bind_text(st, 3, hi, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW &&
           fn((const char *)sqlite3_column_text(st, 0), userdata) == 0)
        ;
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        rc = db_error(c->db, "list");
    stmt_done(st);
    free(hi);
    return rc;
}

static int sqlite_list(ps_backend *b, const char *store, const char *prefix,
                       ps_key_fn fn, void *userdata)
{
    if (!b || !store || !*store || !fn)
        return ps__error_set(PS_EINVAL, "list: %s", !b ? "backend is NULL"
                                     : !store ? "store name is NULL"
                                     : !*store ? "store name is empty" : "fn is NULL");
    sqlite_backend *s = (sqlite_backend *)b;
    conn *c;
    int rc = pool_acquire(&c, s);
    if (rc != PS_OK)
        return rc;
    rc = list_rows(c, store, prefix ? prefix : "", fn, userdata);
    pool_release(s, c);
    return rc;
}

static int sqlite_remove(ps_backend *b, const char *store, const char *key)
{
    int rc = ps__backend_check_key("remove", store, key);
    if (rc != PS_OK || !b)
        return rc != PS_OK ? rc : ps__error_set(PS_EINVAL, "remove: backend is NULL");
    sqlite_backend *s = (sqlite_backend *)b;
    conn *c;
    sqlite3_stmt *st = NULL;
    if ((rc = pool_acquire(&c, s)) != PS_OK)
        return rc;
    if ((rc = stmt(&st, c, S_DELETE)) == PS_OK) {
        sqlite3_bind_text(st, 1, store, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(c->db, "remove");
        else if (sqlite3_changes(c->db) == 0)
            rc = ps__error_set(PS_ENOTFOUND, "key %s/%s not found", store, key);
        stmt_done(st);
    }
    pool_release(s, c);
    return rc;
}

/* Hands one row to @p fn. The doc is copied so it is NUL-terminated like every
 * ps_bytes. @return PS_OK, 1 to stop, or an error. */
static int quarantine_row(sqlite3_stmt *st, ps_quarantine_fn fn, void *userdata)
{
    ps_quarantine_entry e;
    e.id = sqlite3_column_int64(st, 0);
    e.store = (const char *)sqlite3_column_text(st, 1);
    e.key = (const char *)sqlite3_column_text(st, 2);
    e.saved_at = sqlite3_column_double(st, 3);
    e.reason = (const char *)sqlite3_column_text(st, 4);
    const void *blob = sqlite3_column_blob(st, 5);
    int rc = ps_bytes_set(&e.doc, blob, blob ? (size_t)sqlite3_column_bytes(st, 5) : 0);
    if (rc != PS_OK)
        return rc;
    if (!e.store || !e.key || !e.reason) {
        ps_bytes_dispose(&e.doc);
        return ps__error_oom(); /* column_text returns NULL only when out of memory */
    }
    rc = fn(&e, userdata) != 0;
    ps_bytes_dispose(&e.doc);
    return rc;
}

static int sqlite_quarantine_list(ps_backend *b, const char *store, const char *key,
                                  ps_quarantine_fn fn, void *userdata)
{
    if (!b || !fn)
        return ps__error_set(PS_EINVAL, "quarantine list: %s is NULL",
                             b ? "fn" : "backend");
    sqlite_backend *s = (sqlite_backend *)b;
    conn *c;
    sqlite3_stmt *st = NULL;
    int rc = pool_acquire(&c, s);
    if (rc != PS_OK)
        return rc;
    if ((rc = stmt(&st, c, S_QLIST)) == PS_OK) {
        sqlite3_bind_text(st, 1, store, -1, SQLITE_STATIC); /* NULL binds NULL */
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        int step = SQLITE_DONE;
        while (rc == PS_OK && (step = sqlite3_step(st)) == SQLITE_ROW)
            rc = quarantine_row(st, fn, userdata);
        if (rc == PS_OK && step != SQLITE_DONE)
            rc = db_error(c->db, "quarantine list");
        stmt_done(st);
    }
    pool_release(s, c);
    return rc == 1 ? PS_OK : rc;
}

/* ---- open and free ------------------------------------------------------------- */

static void sqlite_free(ps_backend *b)
{
    sqlite_backend *s = (sqlite_backend *)b;
    if (!s)
        return;
    while (s->idle) {
        conn *next = s->idle->next;
        conn_close(s->idle);
        s->idle = next;
    }
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}

/* Creates the file readable by its owner only before SQLite sees it: SQLite would
 * create it 0644 (less umask), and the -wal and -shm files copy the database's mode. */
static int create_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return ps__error_set(PS_EBACKEND, "sqlite open %s: %s", path, strerror(errno));
    close(fd);
    return PS_OK;
}

static int journal_mode_cb(void *result, int ncols, char **values, char **names)
{
    (void)names;
    if (ncols > 0 && values[0])
        *(int *)result = strcmp(values[0], "wal") == 0;
    return 0;
}

static int schema_version(conn *c, int *out)
{
    sqlite3_stmt *st = NULL;
    *out = -1;
    if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return *out < 0 ? db_error(c->db, "schema version") : PS_OK;
}

/* Creates the tables in a write transaction, re-checking the version inside it, so
 * processes opening a new file together create them exactly once. */
static int create_schema(conn *c, const char *path)
{
    int version, rc = exec_stmt(c, S_BEGIN, "begin");
    if (rc != PS_OK)
        return rc;
    rc = schema_version(c, &version);
    if (rc == PS_OK && version > SCHEMA_VERSION)
        rc = ps__error_set(PS_EBACKEND, "sqlite %s: schema version %d is newer than "
                                        "this library's (%d)", path, version,
                           SCHEMA_VERSION);
    else if (rc == PS_OK && version == 0 &&
             (sqlite3_exec(c->db, SCHEMA_SQL, NULL, NULL, NULL) != SQLITE_OK ||
              sqlite3_exec(c->db, "PRAGMA user_version=" STRINGIFY(SCHEMA_VERSION), NULL,
                           NULL, NULL)))
        rc = db_error(c->db, "create schema");
    if (rc == PS_OK)
        rc = exec_stmt(c, S_COMMIT, "commit");
    if (rc != PS_OK)
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* WAL (persistent in the file), then the schema. An existing file of our version is
 * only read, so opening never waits behind another process's write. */
static int init_schema(conn *c, const char *path)
{
    int is_wal = 0, version, rc;
    /* Switching a new file to WAL takes an exclusive lock and SQLite returns BUSY at
     * once, without the busy handler, when another process is doing the same: retry
     * for as long as the busy timeout would have waited. */
    for (int waited_ms = 0;; waited_ms += 2) {
        rc = sqlite3_exec(c->db, "PRAGMA journal_mode=WAL", journal_mode_cb, &is_wal,
                          NULL);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || waited_ms >= BUSY_TIMEOUT_MS)
            break;
        usleep(2000);
    }
    if (rc != SQLITE_OK)
        return db_error(c->db, "journal mode");
    if (!is_wal)
        return ps__error_set(PS_EBACKEND, "sqlite %s: cannot use WAL mode", path);
    rc = schema_version(c, &version);
    if (rc != PS_OK || version == SCHEMA_VERSION)
        return rc;
    return create_schema(c, path);
}

static void set_members(sqlite_backend *s)
{
    ps_backend_init(&s->parent, PS_BACKEND_VERSION);
    s->parent.get = sqlite_get;
    s->parent.update = sqlite_update;
    s->parent.free = sqlite_free;
    s->parent.list = sqlite_list;
    s->parent.remove = sqlite_remove;
    s->parent.quarantine_list = sqlite_quarantine_list;
}

int ps__sqlite_backend_open(ps_backend **out, const char *path)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "sqlite open: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return ps__error_set(PS_EINVAL, "sqlite: store url has an empty path");
    if (strcmp(path, ":memory:") == 0) /* would be one private database per connection */
        return ps__error_set(PS_EINVAL, "sqlite: :memory: is not shareable; use memory:");
    if (!sqlite3_threadsafe())
        return ps__error_set(PS_EBACKEND, "sqlite: library built without threads");
    sqlite_backend *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path)) || pthread_mutex_init(&s->lock, NULL) != 0) {
        if (s)
            free(s->path);
        free(s);
        return ps__error_oom();
    }
    set_members(s);
    conn *c = NULL;
    int rc = create_file(path);
    if (rc == PS_OK)
        rc = conn_open(&c, path);
    if (rc == PS_OK && (rc = init_schema(c, path)) != PS_OK)
        conn_close(c);
    else if (rc == PS_OK)
        pool_release(s, c);
    if (rc != PS_OK) {
        sqlite_free(&s->parent);
        return rc;
    }
    *out = &s->parent;
    return PS_OK;
}
