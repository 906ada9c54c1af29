/*
 * memory.c — the in-process backend, "memory:" (ProfileService's Mock store).
 *
 * A chained hash map (store, key) → (version, bytes) and a quarantine list, behind one
 * mutex. update does NOT hold the mutex while the transform runs: it copies the value
 * out, unlocks, transforms, relocks and compares versions, so the conflict path is the
 * same as a real store's and tests can provoke it by writing from inside a transform.
 * Every value is copied on the way in and out: nothing aliases caller memory.
 *
 * "memory:" opens a fresh private store; "memory:NAME" opens a handle on the
 * process-wide store called NAME, so several services in one process (tests) can
 * share it. Neither is visible to other processes.
 */
#include "backends.h"

#include "error.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next; /* bucket chain */
    uint64_t hash;
    char *store;
    char *key;
    int64_t version;
    ps_bytes doc;
} entry;

typedef struct qentry {
    struct qentry *next; /* oldest first */
    ps_quarantine_entry e; /* store, key, reason and doc owned by this node */
} qentry;

/* The data of one store. A "memory:" handle owns its store; "memory:NAME" handles
 * share the store registered under NAME, which lives until the process exits, so a
 * test can write through one handle, free it, and read through a later one. */
typedef struct memory_store {
    pthread_mutex_t lock;
    entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    /* One counter for every write of every key: a removed and re-created key never
     * gets back a version an in-flight update read (no ABA). */
    int64_t last_version;
    qentry *qhead, *qtail;
    int64_t last_qid;
} memory_store;

typedef struct memory_backend {
    ps_backend parent;
    memory_store *st;
    int owns_store; /* unnamed: freed with the handle */
} memory_backend;

/* Named stores, never freed (reachable from here until exit). */
typedef struct named_store {
    struct named_store *next;
    char *name;
    memory_store *st;
} named_store;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static named_store *registry;

#define INITIAL_BUCKETS 64

/* FNV-1a over store, a NUL separator, then key. */
static uint64_t hash_of(const char *store, const char *key)
{
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)store; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h *= 1099511628211ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* Under the lock. @return the link pointing at the entry (or at the chain's NULL). */
static entry **find(memory_store *m, const char *store, const char *key, uint64_t h)
{
    entry **link = &m->buckets[h & (m->nbuckets - 1)];
    while (*link && !((*link)->hash == h && strcmp((*link)->store, store) == 0 &&
                      strcmp((*link)->key, key) == 0))
        link = &(*link)->next;
    return link;
}

/* Doubles the table when the chains average one entry. Under the lock. Failing to
 * grow is harmless (chains just get longer), so it reports nothing. */
static void maybe_grow(memory_store *m)
{
    if (m->count < m->nbuckets)
        return;
    size_t n = m->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

static void entry_free(entry *e)
{
    if (!e)
        return;
    free(e->store);
    free(e->key);
    ps_bytes_dispose(&e->doc);
    free(e);
}

static int memory_get(ps_bytes *out, ps_backend *b, const char *store, const char *key)
{
    if (!out)
        return ps__error_set(PS_EINVAL, "get: out is NULL");
    out->data = NULL;
    out->len = 0;
    int rc = ps__backend_check_key("get", store, key);
    if (rc != PS_OK || !b)
        return rc != PS_OK ? rc : ps__error_set(PS_EINVAL, "get: backend is NULL");
    memory_store *m = ((memory_backend *)b)->st;
    pthread_mutex_lock(&m->lock);
    entry *e = *find(m, store, key, hash_of(store, key));
    if (!e)
        rc = ps__error_set(PS_ENOTFOUND, "key %s/%s not found", store, key);
    else
        rc = ps_bytes_set(out, e->doc.data, e->doc.len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ---- update ------------------------------------------------------------------- */

typedef struct cas_ctx {
    memory_store *m;
    const char *store;
    const char *key;
    uint64_t hash;
} cas_ctx;

static int cas_read(void *ctx, ps_bytes *current, int *present, int64_t *version)
{
    cas_ctx *c = ctx;
    int rc = PS_OK;
    pthread_mutex_lock(&c->m->lock);
    entry *e = *find(c->m, c->store, c->key, c->hash);
    *present = e != NULL;
    *version = e ? e->version : 0;
    if (e)
        rc = ps_bytes_set(current, e->doc.data, e->doc.len);
    pthread_mutex_unlock(&c->m->lock);
    return rc;
}

/* Under the lock: a quarantine node holding copies of the replaced value. */
static int quarantine_add(memory_store *m, const char *store, const char *key,
                          const ps_bytes *doc, const char *reason)
{
    qentry *q = calloc(1, sizeof *q);
    char *s = strdup(store), *k = strdup(key), *r = strdup(reason);
    if (!q || !s || !k || !r || ps_bytes_set(&q->e.doc, doc->data, doc->len) != PS_OK) {
        free(q), free(s), free(k), free(r);
        return ps__error_oom();
    }
    q->e.id = ++m->last_qid;
    q->e.store = s;
    q->e.key = k;
    q->e.reason = r;
    q->e.saved_at = ps__backend_now();
    if (m->qtail)
        m->qtail->next = q;
    else
        m->qhead = q;
    m->qtail = q;
    return PS_OK;
}

/* Under the lock: a new entry for an absent key; takes @p doc. */
static int insert_new(memory_store *m, cas_ctx *c, ps_bytes *doc)
{
    entry *e = calloc(1, sizeof *e);
    if (!e || !(e->store = strdup(c->store)) || !(e->key = strdup(c->key))) {
        entry_free(e);
        return ps__error_oom();
    }
    e->hash = c->hash;
    e->version = ++m->last_version;
    e->doc = *doc;
    *doc = (ps_bytes){NULL, 0};
    entry **link = find(m, c->store, c->key, c->hash);
    e->next = *link;
    *link = e;
    m->count++;
    maybe_grow(m);
    return PS_OK;
}

/* The transform's doc was malloc'd for us to free, so the map takes it as it is:
 * ownership moves, nothing aliases memory the caller keeps. */
static int cas_write(void *ctx, ps_write *w, const ps_bytes *current, int present,
                     int64_t version)
{
    cas_ctx *c = ctx;
    memory_store *m = c->m;
    int rc = PS_OK;
    pthread_mutex_lock(&m->lock);
    entry *e = *find(m, c->store, c->key, c->hash);
    if ((e != NULL) != (present != 0) || (e && e->version != version)) {
        rc = PS__CAS_RETRY;
    } else if (!e) {
        rc = insert_new(m, c, &w->doc);
    } else {
        if (w->quarantine)
            rc = quarantine_add(m, c->store, c->key, current, w->reason);
        if (rc == PS_OK) {
            ps_bytes_dispose(&e->doc);
            e->doc = w->doc;
            w->doc = (ps_bytes){NULL, 0};
            e->version = ++m->last_version;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int memory_update(ps_backend *b, const char *store, const char *key,
                         ps_transform_fn transform, void *userdata)
{
    static const ps__cas_ops ops = {cas_read, cas_write};
    int rc = ps__backend_check_key("update", store, key);
    if (rc != PS_OK)
        return rc;
    if (!b || !transform)
        return ps__error_set(PS_EINVAL, "update: %s is NULL",
                             b ? "transform" : "backend");
    cas_ctx c = {((memory_backend *)b)->st, store, key, hash_of(store, key)};
    return ps__backend_cas(&ops, &c, store, key, transform, userdata);
}

/* ---- list, remove, quarantine -------------------------------------------------- */

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise, like SQLite */
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* Under the lock: copies of the matching keys, so @p fn later runs unlocked and may
 * call back into this backend. */
static int collect_keys(char ***out, size_t *n, memory_store *m, const char *store,
                        const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    char **keys = malloc((m->count ? m->count : 1) * sizeof *keys);
    *n = 0;
    if (!keys)
        return ps__error_oom();
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i]; e; e = e->next) {
            if (strcmp(e->store, store) != 0 || strncmp(e->key, prefix ? prefix : "",
                                                        plen) != 0)
                continue;
            if (!(keys[*n] = strdup(e->key))) {
                free_keys(keys, *n);
                return ps__error_oom();
            }
            (*n)++;
        }
    }
    *out = keys;
    return PS_OK;
}

static int memory_list(ps_backend *b, const char *store, const char *prefix,
                       ps_key_fn fn, void *userdata)
{
    if (!b || !store || !*store || !fn)
        return ps__error_set(PS_EINVAL, "list: %s", !b ? "backend is NULL"
                                     : !store ? "store name is NULL"
                                     : !*store ? "store name is empty" : "fn is NULL");
    memory_store *m = ((memory_backend *)b)->st;
    char **keys = NULL;
    size_t n = 0;
    pthread_mutex_lock(&m->lock);
    int rc = collect_keys(&keys, &n, m, store, prefix);
    pthread_mutex_unlock(&m->lock);
    if (rc != PS_OK)
        return rc;
    qsort(keys, n, sizeof *keys, cmp_keys);
    for (size_t i = 0; i < n && fn(keys[i], userdata) == 0; i++)
        ;
    free_keys(keys, n);
    return PS_OK;
}

static int memory_remove(ps_backend *b, const char *store, const char *key)
{
    int rc = ps__backend_check_key("remove", store, key);
    if (rc != PS_OK || !b)
        return rc != PS_OK ? rc : ps__error_set(PS_EINVAL, "remove: backend is NULL");
    memory_store *m = ((memory_backend *)b)->st;
    pthread_mutex_lock(&m->lock);
    entry **link = find(m, store, key, hash_of(store, key));
    entry *e = *link;
    if (e) {
        *link = e->next;
        m->count--;
    } else {
        rc = ps__error_set(PS_ENOTFOUND, "key %s/%s not found", store, key);
    }
    pthread_mutex_unlock(&m->lock);
    entry_free(e);
    return rc;
}

static void qentry_free(qentry *q)
{
    free((char *)q->e.store);
    free((char *)q->e.key);
    free((char *)q->e.reason);
    ps_bytes_dispose(&q->e.doc);
    free(q);
}

/* Under the lock: deep copies of the matching quarantine entries, oldest first. */
static int collect_quarantine(qentry **out, memory_store *m, const char *store,
                              const char *key)
{
    qentry *head = NULL, **tail = &head;
    int rc = PS_OK;
    for (qentry *q = m->qhead; q && rc == PS_OK; q = q->next) {
        if ((store && strcmp(q->e.store, store) != 0) || (key && strcmp(q->e.key, key)))
            continue;
        qentry *c = calloc(1, sizeof *c);
        if (!c) {
            rc = ps__error_oom();
            break;
        }
        *tail = c;
        tail = &c->next;
        c->e = q->e;
        c->e.store = strdup(q->e.store), c->e.key = strdup(q->e.key);
        c->e.reason = strdup(q->e.reason);
        c->e.doc = (ps_bytes){NULL, 0};
        if (!c->e.store || !c->e.key || !c->e.reason ||
            ps_bytes_set(&c->e.doc, q->e.doc.data, q->e.doc.len) != PS_OK)
            rc = ps__error_oom();
    }
    *out = head;
    return rc;
}

static int memory_quarantine_list(ps_backend *b, const char *store, const char *key,
                                  ps_quarantine_fn fn, void *userdata)
{
    if (!b || !fn)
        return ps__error_set(PS_EINVAL, "quarantine list: %s is NULL",
                             b ? "fn" : "backend");
    memory_store *m = ((memory_backend *)b)->st;
    qentry *copies = NULL;
    pthread_mutex_lock(&m->lock);
    int rc = collect_quarantine(&copies, m, store, key);
    pthread_mutex_unlock(&m->lock);
    int stop = rc != PS_OK;
    while (copies) {
        qentry *next = copies->next;
        if (!stop)
            stop = fn(&copies->e, userdata) != 0;
        qentry_free(copies);
        copies = next;
    }
    return rc;
}

static void store_free(memory_store *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    }
    for (qentry *q = m->qhead, *next; q; q = next) {
        next = q->next;
        qentry_free(q);
    }
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int store_new(memory_store **out)
{
    memory_store *m = calloc(1, sizeof *m);
    if (!m || !(m->buckets = calloc(INITIAL_BUCKETS, sizeof *m->buckets))) {
        free(m);
        return ps__error_oom();
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m->buckets);
        free(m);
        return ps__error_set(PS_EBACKEND, "memory: cannot create a mutex");
    }
    m->nbuckets = INITIAL_BUCKETS;
    *out = m;
    return PS_OK;
}

/* The store registered under @p name, created on first use. */
static int store_named(memory_store **out, const char *name)
{
    int rc = PS_OK;
    pthread_mutex_lock(&registry_lock);
    named_store *n = registry;
    while (n && strcmp(n->name, name) != 0)
        n = n->next;
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n || !(n->name = strdup(name)))
            rc = ps__error_oom();
        else if ((rc = store_new(&n->st)) == PS_OK)
            n->next = registry, registry = n;
        if (rc != PS_OK && n)
            free(n->name), free(n), n = NULL;
    }
    if (n)
        *out = n->st;
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

static void memory_free(ps_backend *b)
{
    memory_backend *h = (memory_backend *)b;
    if (!h)
        return;
    if (h->owns_store)
        store_free(h->st);
    free(h);
}

int ps__memory_backend_open(ps_backend **out, const char *name)
{
    memory_backend *h = calloc(1, sizeof *h);
    if (!h)
        return ps__error_oom();
    h->owns_store = !name || !*name;
    int rc = h->owns_store ? store_new(&h->st) : store_named(&h->st, name);
    if (rc != PS_OK) {
        free(h);
        return rc;
    }
    ps_backend_init(&h->parent, PS_BACKEND_VERSION);
    h->parent.get = memory_get;
    h->parent.update = memory_update;
    h->parent.free = memory_free;
    h->parent.list = memory_list;
    h->parent.remove = memory_remove;
    h->parent.quarantine_list = memory_quarantine_list;
    *out = &h->parent;
    return PS_OK;
}
