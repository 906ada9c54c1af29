/*
 * postgres.c — the shared store for many servers on many machines, on libpq.
 *
 * URL: postgres://[user[:password]@]host[:port]/db[?param=value&…] (or postgresql://).
 * Our own query parameters are removed before the rest goes to libpq:
 *   pool_size=N              connections in the pool, default 4 (1..256)
 *   statement_timeout_ms=N   server-side statement_timeout, default 10000; 0 = none
 * libpq's connect_timeout defaults to 5 s here (the URL may override it).
 *
 * Schema (one set of tables per database, shared by every store; migrations are
 * versioned in ps_schema and applied on first use under pg_advisory_xact_lock, so
 * concurrent first uses do not race):
 *   ps_profiles(store, key, version BIGINT, doc BYTEA, PRIMARY KEY (store, key))
 *   ps_quarantine(id BIGSERIAL, store, key, saved_at DOUBLE PRECISION, reason, doc)
 *   ps_schema(version INT PRIMARY KEY)
 * Keys use COLLATE "C", so listings are in byte order like the other backends.
 *
 * Isolation: READ COMMITTED (the PostgreSQL default) is enough, and nothing here
 * opens a transaction. update is optimistic: it reads (version, doc) in one
 * statement, runs the transform in the client, then writes with a compare-and-set:
 *   UPDATE … SET version = version + 1, doc = $4
 *          WHERE store = $1 AND key = $2 AND version = $3
 * A single UPDATE locks the row; a concurrent writer waits for that lock and then
 * re-checks its WHERE on the newest committed row (PostgreSQL's EvalPlanQual), so
 * exactly one writer matches a given version and every other one sees 0 rows. A new
 * key is written with INSERT … ON CONFLICT (store, key) DO NOTHING, where the unique
 * index lets one inserter win. 0 rows means conflict: the shared loop of backend.c
 * (ps__backend_cas) reads again and retries, with backoff, up to
 * PS__UPDATE_MAX_ATTEMPTS times, then returns PS_ECONFLICT. Stricter levels
 * (REPEATABLE READ, SERIALIZABLE — the default of some PG-wire distributed engines)
 * are safe too: the loser then gets SQLSTATE 40001, which is handled as a conflict.
 * Only plain SQL is used: no PL/pgSQL, no server functions beyond random() and
 * pg_advisory_xact_lock (schema setup only).
 *
 * Quarantine: when the transform asks to keep the current bytes aside, the CAS and
 * the quarantine insert are ONE statement (a data-modifying CTE), hence atomic and
 * one round trip; the INSERT feeds on the UPDATE's RETURNING, so it happens only if
 * the CAS matched. The old bytes are sent back as a parameter: they are exactly the
 * stored ones, because the CAS proves the version did not move since the read.
 *
 * Versions: a new row starts at a random version in [1, 2^52], not 1, so a key that
 * is removed and created again between another writer's read and its CAS cannot
 * match that writer's old version by accident (the ABA problem).
 *
 * Round trips: update = 2 (read + CAS) plus 2 per conflict; get, remove,
 * server_time = 1; list = 1 per 1000 keys. Statements are prepared once per
 * connection, lazily.
 *
 * Pool and timeouts: a fixed array of connections, borrowed under a mutex + condvar.
 * A connection is opened on first borrow; one that broke (CONNECTION_BAD, a
 * connection-class SQLSTATE, or no reply in time) is PQreset on its next borrow, and
 * a read that fails on a stale connection is retried once on a fresh one. A write
 * is never retried here: when the connection drops after it was sent, it may or may
 * not have committed, and update returns PS_EBACKEND. Every statement runs
 * non-blocking against a client deadline of statement_timeout + 5 s, so even a frozen
 * server that keeps TCP alive cannot hang a worker: the connection is then marked
 * broken and reset.
 *
 * Messages never contain the password or the URL: they name host:port/db, and any
 * text from libpq is scrubbed of the password before it is recorded.
 */
#include "backends.h"
#include "error.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_SCHEMA_VERSION 1
#define PG_DEFAULT_POOL 4
#define PG_MAX_POOL 256
#define PG_DEFAULT_STATEMENT_TIMEOUT_MS 10000
#define PG_REPLY_MARGIN_MS 5000
#define PG_LIST_PAGE "1000"
#define PG_QUARANTINE_PAGE "64"
/* pg_advisory_xact_lock key for schema setup: "ps_schem" in ASCII. */
#define PG_SCHEMA_LOCK "8103510000236389741"

/* Type OIDs from pg_type.h (a server header libpq-dev does not ship). */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

enum { ST_GET, ST_INSERT, ST_UPDATE, ST_UPDATE_QUARANTINE, ST_REMOVE, ST_LIST,
       ST_QUARANTINE_LIST, ST_NOW, ST_COUNT };

typedef struct statement {
    const char *name;
    const char *sql;
    int nparams;
    Oid types[6];
} statement;

static const statement statements[ST_COUNT] = {
    {"ps_get", "SELECT version, doc FROM ps_profiles WHERE store = $1 AND key = $2",
     2, {OID_TEXT, OID_TEXT}},
    {"ps_insert",
     "INSERT INTO ps_profiles (store, key, version, doc) VALUES ($1, $2, "
     "1 + floor(random() * 4503599627370496)::bigint, $3) "
     "ON CONFLICT (store, key) DO NOTHING",
     3, {OID_TEXT, OID_TEXT, OID_BYTEA}},
    {"ps_update",
     "UPDATE ps_profiles SET version = version + 1, doc = $4 "
     "WHERE store = $1 AND key = $2 AND version = $3",
     4, {OID_TEXT, OID_TEXT, OID_INT8, OID_BYTEA}},
    {"ps_update_quarantine",
     "WITH w AS (UPDATE ps_profiles SET version = version + 1, doc = $4 "
     "WHERE store = $1 AND key = $2 AND version = $3 RETURNING store, key) "
     "INSERT INTO ps_quarantine (store, key, saved_at, reason, doc) "
     "SELECT store, key, extract(epoch FROM clock_timestamp())::float8, $5, $6 FROM w",
     6, {OID_TEXT, OID_TEXT, OID_INT8, OID_BYTEA, OID_TEXT, OID_BYTEA}},
    {"ps_remove", "DELETE FROM ps_profiles WHERE store = $1 AND key = $2",
     2, {OID_TEXT, OID_TEXT}},
    /* Keyset pages: the connection goes back to the pool between pages, so a
     * listing callback may use the backend and memory stays bounded. */
    {"ps_list",
     "SELECT key FROM ps_profiles WHERE store = $1 AND left(key, length($2)) = $2 "
     "AND ($3::text IS NULL OR key > $3) ORDER BY key LIMIT " PG_LIST_PAGE,
     3, {OID_TEXT, OID_TEXT, OID_TEXT}},
    {"ps_quarantine_list",
     "SELECT id, store, key, saved_at, reason, doc FROM ps_quarantine "
     "WHERE ($1::text IS NULL OR store = $1) AND ($2::text IS NULL OR key = $2) "
     "AND id > $3 ORDER BY id LIMIT " PG_QUARANTINE_PAGE,
     3, {OID_TEXT, OID_TEXT, OID_INT8}},
    /* The store's clock (server_time): the wall clock now, not the transaction's
     * start, though with no transaction open the two are the same instant. */
    {"ps_now", "SELECT extract(epoch FROM clock_timestamp())::float8", 0, {0}},
};

/* Migration N (1-based) brings the schema from version N-1 to N. Append only. */
static const char *const migrations[PG_SCHEMA_VERSION] = {
    "CREATE TABLE IF NOT EXISTS ps_profiles ("
    " store TEXT COLLATE \"C\" NOT NULL, key TEXT COLLATE \"C\" NOT NULL,"
    " version BIGINT NOT NULL, doc BYTEA NOT NULL, PRIMARY KEY (store, key));"
    "CREATE TABLE IF NOT EXISTS ps_quarantine ("
    " id BIGSERIAL PRIMARY KEY, store TEXT NOT NULL, key TEXT NOT NULL,"
    " saved_at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, doc BYTEA NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ps_quarantine_store_key"
    " ON ps_quarantine (store, key, id)",
};

typedef struct pg_conn {
    PGconn *pq;
    unsigned prepared; /* bit per statement, cleared when the connection is reset */
    int configured;    /* statement_timeout and non-blocking mode set */
    int broken;        /* reset on next borrow */
} pg_conn;

typedef struct pg_backend {
    ps_backend parent;
    char *dsn;           /* the URL without our parameters; never shown */
    char *secret[2];     /* the password, decoded and raw: scrubbed from messages */
    char where[160];     /* "host:port/db", for messages */
    int statement_timeout_ms;
    pthread_mutex_t mutex;
    pthread_cond_t idle_cond;
    pg_conn *conns;
    int *idle; /* stack of indexes into conns */
    int size, nidle;
} pg_backend;

/* ---------------------------------------------------------------------------- */
/* Messages                                                                      */

/* Replaces each occurrence of @p secret in @p s with "***" (in place: never longer). */
static void scrub(char *s, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    char *hit;
    if (n < 3) /* shorter than the mask: masking would only garble the message */
        return;
    while ((hit = strstr(s, secret)) != NULL) {
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + n, strlen(hit + n) + 1);
    }
}

/* Records @p code: "postgres HOST:PORT/DB: WHAT: DETAIL", one line, no secret. */
static int fail_code(pg_backend *b, int code, const char *what, const char *detail)
{
    char text[400];
    size_t n = 0;
    /* libpq's messages span lines ("…failed: FATAL:  …\n\tIs the server…"). */
    for (const char *p = detail ? detail : ""; *p && n < sizeof text - 1; p++) {
        int space = *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t';
        if (!space || (n > 0 && text[n - 1] != ' '))
            text[n++] = space ? ' ' : *p;
    }
    while (n > 0 && text[n - 1] == ' ')
        n--;
    text[n] = '\0';
    scrub(text, b->secret[0]);
    scrub(text, b->secret[1]);
    return ps__error_set(code, "postgres%s%s: %s%s%s", b->where[0] ? " " : "",
                         b->where, what, text[0] ? ": " : "", text);
}

static int fail(pg_backend *b, const char *what, const char *detail)
{
    return fail_code(b, PS_EBACKEND, what, detail);
}

/* Connection failures: the SQLSTATE classes after which the session is gone. */
static int is_connection_error(const char *sqlstate)
{
    return sqlstate &&
           (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57P", 3) == 0);
}

/* Serialization failures and deadlocks are lost races, like a CAS miss. */
static int is_conflict_error(const char *sqlstate)
{
    return sqlstate && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/* ---------------------------------------------------------------------------- */
/* Statements with a client-side deadline                                        */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keeps the first error among a command's results, else the last result. */
static PGresult *keep_result(PGresult *kept, PGresult *r)
{
    if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
        PQclear(r);
        return kept;
    }
    PQclear(kept);
    return r;
}

/* Waits for the whole reply of the command just sent, flushing what is left of the
 * request (the connection is non-blocking), until the client deadline. On timeout
 * or I/O failure the connection is marked broken and PS_EBACKEND is returned. */
static int await_reply(pg_backend *b, pg_conn *c, const char *what, PGresult **out)
{
    int64_t deadline = b->statement_timeout_ms > 0
        ? now_ms() + b->statement_timeout_ms + PG_REPLY_MARGIN_MS : -1;
    PGresult *kept = NULL;
    for (;;) {
        int pending = PQflush(c->pq);
        if (pending < 0)
            break;
        while (!pending && !PQisBusy(c->pq)) {
            PGresult *r = PQgetResult(c->pq);
            if (!r) {
                *out = kept;
                return PS_OK;
            }
            kept = keep_result(kept, r);
        }
        struct pollfd pfd = {PQsocket(c->pq), POLLIN | (pending ? POLLOUT : 0), 0};
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        int n = poll(&pfd, 1, wait);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            PQclear(kept);
            c->broken = 1;
            return fail(b, what, "no reply in time; the connection will be reset");
        }
        if (n < 0 || !PQconsumeInput(c->pq))
            break;
    }
    PQclear(kept);
    c->broken = 1;
    return fail(b, what, PQerrorMessage(c->pq));
}

/* Turns a finished command into a status. @return PS_OK (with *out set, caller
 * clears it); PS_ECONFLICT for a lost serialization race; PS_EBACKEND otherwise. */
static int check_result(pg_backend *b, pg_conn *c, const char *what, PGresult *r,
                        PGresult **out)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        *out = r;
        return PS_OK;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int rc = is_conflict_error(state) ? PS_ECONFLICT : PS_EBACKEND;
    if (!r || is_connection_error(state) || PQstatus(c->pq) != CONNECTION_OK)
        c->broken = 1;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char detail[300];
    snprintf(detail, sizeof detail, "%s%s%s%s", msg ? msg : PQerrorMessage(c->pq),
             state ? " (SQLSTATE " : "", state ? state : "", state ? ")" : "");
    fail_code(b, rc, what, detail);
    PQclear(r);
    return rc;
}

/* Runs plain SQL (one or more statements, simple protocol) on a connection. */
static int run_sql(pg_backend *b, pg_conn *c, const char *what, const char *sql,
                   PGresult **out)
{
    PGresult *r = NULL;
    if (!PQsendQuery(c->pq, sql)) {
        c->broken = 1;
        return fail(b, what, PQerrorMessage(c->pq));
    }
    int rc = await_reply(b, c, what, &r);
    return rc ? rc : check_result(b, c, what, r, out);
}

/* Prepares statement @p st on @p c the first time it is used there. */
static int prepare(pg_backend *b, pg_conn *c, int st)
{
    const statement *s = &statements[st];
    PGresult *r = NULL;
    if (c->prepared & (1u << st))
        return PS_OK;
    if (!PQsendPrepare(c->pq, s->name, s->sql, s->nparams, s->types)) {
        c->broken = 1;
        return fail(b, "prepare failed", PQerrorMessage(c->pq));
    }
    int rc = await_reply(b, c, "prepare failed", &r);
    if (!rc)
        rc = check_result(b, c, "prepare failed", r, &r);
    if (!rc) {
        PQclear(r);
        c->prepared |= 1u << st;
    }
    return rc;
}

/* A parameter list: text values are NUL-terminated (len ignored), BYTEA binary. */
typedef struct params {
    int n;
    const char *values[6];
    int lengths[6];
    int formats[6];
} params;

static void param_text(params *p, const char *s)
{
    p->values[p->n] = s;
    p->lengths[p->n] = 0;
    p->formats[p->n++] = 0;
}

static void param_bytes(params *p, const char *data, size_t len)
{
    p->values[p->n] = data;
    p->lengths[p->n] = (int)len;
    p->formats[p->n++] = 1;
}

/* Runs a prepared statement; results come back in binary format. */
static int run(pg_backend *b, pg_conn *c, int st, const params *p, const char *what,
               PGresult **out)
{
    PGresult *r = NULL;
    int rc = prepare(b, c, st);
    if (rc)
        return rc;
    if (!PQsendQueryPrepared(c->pq, statements[st].name, p->n, p->values, p->lengths,
                             p->formats, 1)) {
        c->broken = 1;
        return fail(b, what, PQerrorMessage(c->pq));
    }
    rc = await_reply(b, c, what, &r);
    return rc ? rc : check_result(b, c, what, r, out);
}

/* ---------------------------------------------------------------------------- */
/* Pool                                                                          */

/* libpq prints NOTICEs ("relation already exists, skipping") to stderr by default;
 * a library must not write to the host's stderr. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Opens, or resets a broken, connection and sets it up for run(). */
static int connect_conn(pg_backend *b, pg_conn *c)
{
    static const char *const keys[] = {"connect_timeout", "fallback_application_name",
                                       "dbname", NULL};
    const char *values[] = {"5", "profileservice", b->dsn, NULL};
    if (!c->pq) {
        c->pq = PQconnectdbParams(keys, values, 1); /* the URL overrides the defaults */
        if (!c->pq)
            return ps__error_oom();
        PQsetNoticeProcessor(c->pq, ignore_notice, NULL);
    } else if (c->broken || PQstatus(c->pq) != CONNECTION_OK) {
        PQreset(c->pq);
    } else {
        return PS_OK;
    }
    c->prepared = 0;
    c->configured = 0;
    c->broken = 0;
    if (PQstatus(c->pq) != CONNECTION_OK) {
        c->broken = 1;
        return fail(b, "cannot connect", PQerrorMessage(c->pq));
    }
    return PS_OK;
}

/* statement_timeout bounds the server's work; non-blocking mode lets await_reply
 * bound ours, even while sending a large document. */
static int configure_conn(pg_backend *b, pg_conn *c)
{
    char sql[64];
    PGresult *r = NULL;
    if (c->configured)
        return PS_OK;
    if (PQsetnonblocking(c->pq, 1) != 0) {
        c->broken = 1;
        return fail(b, "cannot configure the connection", PQerrorMessage(c->pq));
    }
    snprintf(sql, sizeof sql, "SET statement_timeout = %d", b->statement_timeout_ms);
    int rc = run_sql(b, c, "cannot set statement_timeout", sql, &r);
    PQclear(r);
    if (!rc)
        c->configured = 1;
    return rc;
}

/* Borrows a connection, waiting while all are in use, and makes it usable. */
static int borrow(pg_conn **out, pg_backend *b)
{
    pthread_mutex_lock(&b->mutex);
    while (b->nidle == 0)
        pthread_cond_wait(&b->idle_cond, &b->mutex);
    pg_conn *c = &b->conns[b->idle[--b->nidle]];
    pthread_mutex_unlock(&b->mutex);

    int rc = connect_conn(b, c);
    if (!rc)
        rc = configure_conn(b, c);
    *out = c;
    return rc; /* on failure the caller still gives the connection back */
}

static void give_back(pg_backend *b, pg_conn *c)
{
    pthread_mutex_lock(&b->mutex);
    b->idle[b->nidle++] = (int)(c - b->conns);
    pthread_cond_signal(&b->idle_cond);
    pthread_mutex_unlock(&b->mutex);
}

/* Runs a read-only statement; if a pooled connection turns out to be stale (the
 * server restarted since its last use), it is reset and the read tried once more. */
static int run_read(pg_backend *b, pg_conn *c, int st, const params *p,
                    const char *what, PGresult **out)
{
    int rc = run(b, c, st, p, what, out);
    if (rc == PS_EBACKEND && c->broken) {
        if (connect_conn(b, c) == PS_OK && configure_conn(b, c) == PS_OK)
            rc = run(b, c, st, p, what, out);
    }
    return rc;
}

/* ---------------------------------------------------------------------------- */
/* Binary results                                                                */

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

static int64_t get_int8(const PGresult *r, int row, int col)
{
    return (int64_t)be64(PQgetvalue(r, row, col));
}

static double get_float8(const PGresult *r, int row, int col)
{
    uint64_t bits = be64(PQgetvalue(r, row, col));
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* A borrowed view of a BYTEA column (libpq NUL-terminates every value). */
static ps_bytes get_bytes(const PGresult *r, int row, int col)
{
    ps_bytes v = {PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col)};
    return v;
}

static int affected_rows(const PGresult *r)
{
    return atoi(PQcmdTuples((PGresult *)r));
}

/* ---------------------------------------------------------------------------- */
/* Schema                                                                        */

/* Applies the migrations this database lacks, in one transaction serialized by an
 * advisory lock: concurrent first uses wait, then find the schema current. */
static int migrate(pg_backend *b, pg_conn *c)
{
    PGresult *r = NULL;
    int rc = run_sql(b, c, "schema setup failed",
                     "BEGIN; SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK ");"
                     "CREATE TABLE IF NOT EXISTS ps_schema (version INT PRIMARY KEY);"
                     "SELECT coalesce(max(version), 0) FROM ps_schema", &r);
    int have = rc ? 0 : atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!rc && have > PG_SCHEMA_VERSION) {
        char detail[96];
        snprintf(detail, sizeof detail,
                 "database schema version %d, this library knows %d", have,
                 PG_SCHEMA_VERSION);
        rc = fail(b, "schema is newer than this library", detail);
    }
    for (int v = have + 1; !rc && v <= PG_SCHEMA_VERSION; v++) {
        char sql[2048];
        snprintf(sql, sizeof sql, "%s; INSERT INTO ps_schema (version) VALUES (%d)",
                 migrations[v - 1], v);
        rc = run_sql(b, c, "schema migration failed", sql, &r);
        PQclear(r);
    }
    const char *end = rc ? "ROLLBACK" : "COMMIT";
    if (!c->broken) {
        int end_rc = run_sql(b, c, "schema setup failed", end, &r);
        PQclear(r);
        rc = rc ? rc : end_rc;
    }
    return rc;
}

/* ---------------------------------------------------------------------------- */
/* Vtable                                                                        */

/* Reads (version, doc) of one key; *present = 0 when absent. */
static int read_row(pg_backend *b, pg_conn *c, const char *store, const char *key,
                    ps_bytes *out, int *present, int64_t *version)
{
    PGresult *r = NULL;
    params p = {0};
    param_text(&p, store);
    param_text(&p, key);
    int rc = run_read(b, c, ST_GET, &p, "read failed", &r);
    *present = !rc && PQntuples(r) > 0;
    if (*present) {
        *version = get_int8(r, 0, 0);
        rc = ps_bytes_set(out, PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1));
    }
    PQclear(r);
    return rc;
}

static int get_impl(ps_bytes *out, ps_backend *backend, const char *store,
                    const char *key)
{
    pg_backend *b = (pg_backend *)backend;
    pg_conn *c;
    int present = 0;
    int64_t version;
    if (!out)
        return ps__error_set(PS_EINVAL, "get: out is NULL");
    memset(out, 0, sizeof *out);
    int rc = ps__backend_check_key("get", store, key);
    if (rc || !b)
        return rc ? rc : ps__error_set(PS_EINVAL, "get: backend is NULL");
    rc = borrow(&c, b);
    if (!rc)
        rc = read_row(b, c, store, key, out, &present, &version);
    give_back(b, c);
    if (!rc && !present)
        rc = ps__error_set(PS_ENOTFOUND, "key %s/%s not found", store, key);
    return rc;
}

/* One update attempt's connection and key, for the shared CAS loop. */
typedef struct cas_ctx {
    pg_backend *b;
    pg_conn *c;
    const char *store, *key;
} cas_ctx;

static int cas_read(void *ctx, ps_bytes *current, int *present, int64_t *version)
{
    cas_ctx *x = ctx;
    return read_row(x->b, x->c, x->store, x->key, current, present, version);
}

/* The compare-and-set: INSERT for an absent key, UPDATE … AND version = $3 else,
 * with the quarantine insert in the same statement when asked. 0 rows, or a
 * serialization failure at stricter isolation levels, means another writer won. */
static int cas_write(void *ctx, ps_write *w, const ps_bytes *current, int present,
                     int64_t version)
{
    cas_ctx *x = ctx;
    char v[24];
    PGresult *r = NULL;
    params p = {0};
    int st = !present ? ST_INSERT : w->quarantine ? ST_UPDATE_QUARANTINE : ST_UPDATE;
    param_text(&p, x->store);
    param_text(&p, x->key);
    if (present) {
        snprintf(v, sizeof v, "%" PRId64, version);
        param_text(&p, v);
    }
    param_bytes(&p, w->doc.data, w->doc.len);
    if (st == ST_UPDATE_QUARANTINE) {
        param_text(&p, w->reason);
        param_bytes(&p, current->data ? current->data : "", current->len);
    }
    int rc = run(x->b, x->c, st, &p, "write failed", &r);
    if (!rc && affected_rows(r) != 1)
        rc = PS_ECONFLICT;
    PQclear(r);
    return rc == PS_ECONFLICT ? PS__CAS_RETRY : rc;
}

static int update_impl(ps_backend *backend, const char *store, const char *key,
                       ps_transform_fn transform, void *userdata)
{
    static const ps__cas_ops ops = {cas_read, cas_write};
    pg_backend *b = (pg_backend *)backend;
    cas_ctx x = {b, NULL, store, key};
    int rc = ps__backend_check_key("update", store, key);
    if (rc)
        return rc;
    if (!b || !transform)
        return ps__error_set(PS_EINVAL, "update: %s is NULL",
                             b ? "transform" : "backend");
    rc = borrow(&x.c, b);
    if (!rc)
        rc = ps__backend_cas(&ops, &x, store, key, transform, userdata);
    give_back(b, x.c);
    return rc;
}

static int remove_impl(ps_backend *backend, const char *store, const char *key)
{
    pg_backend *b = (pg_backend *)backend;
    pg_conn *c;
    PGresult *r = NULL;
    params p = {0};
    int rc = ps__backend_check_key("remove", store, key);
    if (rc || !b)
        return rc ? rc : ps__error_set(PS_EINVAL, "remove: backend is NULL");
    param_text(&p, store);
    param_text(&p, key);
    rc = borrow(&c, b);
    if (!rc)
        rc = run(b, c, ST_REMOVE, &p, "remove failed", &r);
    give_back(b, c);
    if (!rc && affected_rows(r) == 0)
        rc = ps__error_set(PS_ENOTFOUND, "key %s/%s not found", store, key);
    PQclear(r);
    return rc;
}

/* Fetches one page of a listing; the connection is given back before it returns. */
static int fetch_page(pg_backend *b, int st, const params *p, PGresult **out)
{
    pg_conn *c;
    int rc = borrow(&c, b);
    if (!rc)
        rc = run_read(b, c, st, p, "listing failed", out);
    give_back(b, c);
    return rc;
}

static int list_impl(ps_backend *backend, const char *store, const char *prefix,
                     ps_key_fn fn, void *userdata)
{
    pg_backend *b = (pg_backend *)backend;
    char *after = NULL;
    int rc = PS_OK, stop = 0, rows;
    if (!b || !store || !*store || !fn)
        return ps__error_set(PS_EINVAL, "list: %s", !b ? "backend is NULL"
                             : !store ? "store name is NULL"
                             : !*store ? "store name is empty" : "fn is NULL");
    do {
        PGresult *r = NULL;
        params p = {0};
        param_text(&p, store);
        param_text(&p, prefix ? prefix : "");
        param_text(&p, after);
        rc = fetch_page(b, ST_LIST, &p, &r);
        rows = rc ? 0 : PQntuples(r);
        for (int i = 0; i < rows && !stop; i++)
            stop = fn(PQgetvalue(r, i, 0), userdata);
        free(after);
        after = rows > 0 ? strdup(PQgetvalue(r, rows - 1, 0)) : NULL;
        PQclear(r);
        if (rows > 0 && !after)
            rc = ps__error_oom();
    } while (!rc && !stop && rows == atoi(PG_LIST_PAGE));
    free(after);
    return rc;
}

static int quarantine_list_impl(ps_backend *backend, const char *store, const char *key,
                                ps_quarantine_fn fn, void *userdata)
{
    pg_backend *b = (pg_backend *)backend;
    char after[24] = "0";
    int rc = PS_OK, stop = 0, rows;
    if (!b || !fn)
        return ps__error_set(PS_EINVAL, "quarantine list: %s is NULL",
                             b ? "fn" : "backend");
    do {
        PGresult *r = NULL;
        params p = {0};
        param_text(&p, store);
        param_text(&p, key);
        param_text(&p, after);
        rc = fetch_page(b, ST_QUARANTINE_LIST, &p, &r);
        rows = rc ? 0 : PQntuples(r);
        for (int i = 0; i < rows && !stop; i++) {
            ps_quarantine_entry e = {get_int8(r, i, 0), PQgetvalue(r, i, 1),
                                     PQgetvalue(r, i, 2), get_float8(r, i, 3),
                                     PQgetvalue(r, i, 4), get_bytes(r, i, 5)};
            stop = fn(&e, userdata);
        }
        if (rows > 0)
            snprintf(after, sizeof after, "%" PRId64, get_int8(r, rows - 1, 0));
        PQclear(r);
    } while (!rc && !stop && rows == atoi(PG_QUARANTINE_PAGE));
    return rc;
}

/* backend.h server_time: PostgreSQL's clock, so servers whose own clocks disagree
 * stamp LastUpdate on one clock. One round trip (a read: retried once on a stale
 * connection). */
static int server_time_impl(double *out, ps_backend *backend)
{
    pg_backend *b = (pg_backend *)backend;
    pg_conn *c;
    PGresult *r = NULL;
    params p = {0};
    if (!out || !b)
        return ps__error_set(PS_EINVAL, "server time: %s is NULL", b ? "out" : "backend");
    int rc = borrow(&c, b);
    if (!rc)
        rc = run_read(b, c, ST_NOW, &p, "clock read failed", &r);
    give_back(b, c);
    if (!rc && PQntuples(r) == 1)
        *out = get_float8(r, 0, 0);
    else if (!rc)
        rc = fail(b, "clock read failed", "no row");
    PQclear(r);
    return rc;
}

static void free_impl(ps_backend *backend)
{
    pg_backend *b = (pg_backend *)backend;
    if (!b)
        return;
    for (int i = 0; b->conns && i < b->size; i++)
        PQfinish(b->conns[i].pq);
    for (int i = 0; i < 2; i++) {
        if (b->secret[i])
            explicit_bzero(b->secret[i], strlen(b->secret[i]));
        free(b->secret[i]);
    }
    if (b->dsn)
        explicit_bzero(b->dsn, strlen(b->dsn));
    free(b->dsn);
    free(b->conns);
    free(b->idle);
    pthread_mutex_destroy(&b->mutex);
    pthread_cond_destroy(&b->idle_cond);
    free(b);
}

/* ---------------------------------------------------------------------------- */
/* Opening: our URL parameters, the password to scrub, the label for messages     */

/* Parses a decimal setting in [lo, hi]. @return PS_OK or PS_EINVAL. */
static int parse_setting(int *out, const char *name, const char *s, size_t len, int lo,
                         int hi)
{
    long v = 0;
    size_t i = 0;
    for (; i < len && i < 10 && s[i] >= '0' && s[i] <= '9'; i++)
        v = v * 10 + (s[i] - '0');
    if (len == 0 || i != len || v < lo || v > hi)
        return ps__error_set(PS_EINVAL, "postgres url: %s must be an integer in %d..%d, "
                             "got \"%.*s\"", name, lo, hi, (int)(len > 20 ? 20 : len), s);
    *out = (int)v;
    return PS_OK;
}

/* Takes our parameter out of the query string if @p item is one. @return 1 taken,
 * 0 not ours, negative status on a bad value. */
static int take_setting(pg_backend *b, const char *item, size_t len)
{
    static const char pool[] = "pool_size=", timeout[] = "statement_timeout_ms=";
    if (len >= sizeof pool - 1 && memcmp(item, pool, sizeof pool - 1) == 0) {
        int rc = parse_setting(&b->size, "pool_size", item + sizeof pool - 1,
                               len - (sizeof pool - 1), 1, PG_MAX_POOL);
        return rc ? rc : 1;
    }
    if (len >= sizeof timeout - 1 && memcmp(item, timeout, sizeof timeout - 1) == 0) {
        int rc = parse_setting(&b->statement_timeout_ms, "statement_timeout_ms",
                               item + sizeof timeout - 1, len - (sizeof timeout - 1), 0,
                               24 * 3600 * 1000);
        return rc ? rc : 1;
    }
    return 0;
}

/* Copies @p url into b->dsn without our query parameters. */
static int strip_settings(pg_backend *b, const char *url)
{
    const char *q = strchr(url, '?');
    size_t head = q ? (size_t)(q - url) : strlen(url);
    char *dsn = malloc(strlen(url) + 1), *w;
    if (!dsn)
        return ps__error_oom();
    memcpy(dsn, url, head);
    w = dsn + head;
    for (const char *item = q ? q + 1 : NULL; item && *item;) {
        size_t len = strcspn(item, "&");
        int taken = take_setting(b, item, len);
        if (taken < 0) {
            free(dsn);
            return taken;
        }
        if (!taken && len > 0) {
            char sep = w == dsn + head ? '?' : '&';
            *w++ = sep;
            memcpy(w, item, len);
            w += len;
        }
        item += len + (item[len] == '&');
    }
    *w = '\0';
    b->dsn = dsn;
    return PS_OK;
}

/* The password as written in the URL (user:PASSWORD@), before percent-decoding:
 * libpq may quote that raw text in a parse error. */
static char *raw_password(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return NULL;
    p += 3;
    const char *at = p + strcspn(p, "@/?");
    if (*at != '@')
        return NULL;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    return colon ? strndup(colon + 1, (size_t)(at - colon - 1)) : NULL;
}

/* Reads the decoded password (to scrub) and host/port/db (to name the server in
 * messages) from the connection string, which libpq also validates here. */
static int describe(pg_backend *b)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(b->dsn, &err);
    const char *host = NULL, *port = NULL, *db = NULL;
    if (!opts) {
        /* libpq's parse errors quote the URL back, password included: not shown. */
        int rc = err ? fail_code(b, PS_EINVAL, "invalid connection url",
                                 "libpq cannot parse it")
                     : ps__error_oom();
        PQfreemem(err);
        return rc;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "password") == 0)
            b->secret[0] = strdup(o->val);
        else if (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0)
            host = host ? host : o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
    }
    snprintf(b->where, sizeof b->where, "%s:%s/%s", host ? host : "localhost",
             port ? port : "5432", db ? db : "");
    PQconninfoFree(opts);
    return PS_OK;
}

static int init_pool(pg_backend *b)
{
    b->conns = calloc((size_t)b->size, sizeof *b->conns);
    b->idle = calloc((size_t)b->size, sizeof *b->idle);
    if (!b->conns || !b->idle)
        return ps__error_oom();
    for (int i = 0; i < b->size; i++)
        b->idle[b->nidle++] = b->size - 1 - i;
    return PS_OK;
}

/* Connects once at open, so a wrong URL or a down server is reported at once,
 * and brings the schema up to date. */
static int first_use(pg_backend *b)
{
    pg_conn *c;
    int rc = borrow(&c, b);
    if (!rc)
        rc = migrate(b, c);
    give_back(b, c);
    return rc;
}

int ps__postgres_backend_open(ps_backend **out, const char *conninfo)
{
    pg_backend *b;
    int rc;
    if (!out || !conninfo)
        return ps__error_set(PS_EINVAL, "postgres open: %s is NULL",
                             out ? "url" : "out");
    *out = NULL;
    if (!(b = calloc(1, sizeof *b)))
        return ps__error_oom();
    pthread_mutex_init(&b->mutex, NULL);
    pthread_cond_init(&b->idle_cond, NULL);
    b->size = PG_DEFAULT_POOL;
    b->statement_timeout_ms = PG_DEFAULT_STATEMENT_TIMEOUT_MS;
    b->secret[1] = raw_password(conninfo);
    rc = ps_backend_init(&b->parent, PS_BACKEND_VERSION);
    if (!rc)
        rc = strip_settings(b, conninfo);
    if (!rc)
        rc = describe(b);
    if (!rc)
        rc = init_pool(b);
    if (!rc)
        rc = first_use(b);
    if (rc) {
        free_impl(&b->parent);
        return rc;
    }
    b->parent.get = get_impl;
    b->parent.update = update_impl;
    b->parent.free = free_impl;
    b->parent.list = list_impl;
    b->parent.remove = remove_impl;
    b->parent.quarantine_list = quarantine_list_impl;
    b->parent.server_time = server_time_impl;
    *out = &b->parent;
    return PS_OK;
}
