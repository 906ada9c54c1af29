/*
 * checker.c — the independent invariant check. Reads only the journals (what each
 * server was told had happened) and the stored documents (through the raw backend,
 * decoded with jansson, not with the library's document code), and verifies:
 *
 *  - sessions: no SessionLoadCount given to two loads; no save acknowledged by a
 *    session whose snapshot was taken after a newer session had loaded the key (a
 *    write by a stale owner); the stored SessionLoadCount is not behind a journaled load.
 *  - saves: no load saw a Seq lower than one acknowledged before the load began (a
 *    lost or overwritten save), the final Data.Seq and Data.Plays are at least those
 *    of every acknowledged save, and Data.Seq equals MetaTags.SaveSeq (Data and
 *    MetaTags are written together).
 *  - gifts: none applied twice, none applied while its update is still stored (it
 *    would be applied again), after the drain every accepted gift applied exactly once
 *    and no update left.
 *  - purchases: none granted twice, every confirmed purchase present, every id in
 *    MetaTags.ProfilePurchaseIds granted in Data.
 *  - locks: before the drain no profile is held by a server that shut down cleanly;
 *    after it no profile is held at all.
 */
#include "sim.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRINT_LIMIT 40

typedef struct load_rec {
    int key, job;
    int64_t count, seq, saveseq;
    double t_done, t_req;
} load_rec;

typedef struct save_rec {
    int key, job;
    int64_t seq, count, plays;
    double t_snap, t_ack;
} save_rec;

typedef struct named_rec {
    int key;
    char id[48];
} named_rec;

typedef struct obs_rec {
    int key;
    int64_t count, seq;
    double t;
} obs_rec;

typedef struct job_rec {
    char name[96];
    int clean_exit;
} job_rec;

#define VEC(T)                                                                           \
    struct {                                                                             \
        T *v;                                                                            \
        size_t n, cap;                                                                   \
    }

typedef struct journals {
    VEC(load_rec) loads;
    VEC(save_rec) saves;
    VEC(named_rec) gifts;     /* accepted: key = target */
    VEC(named_rec) purchases; /* confirmed */
    VEC(job_rec) jobs;
    VEC(obs_rec) observed; /* the watcher's, in the order it saw them */
    sim_totals totals;
} journals;

#define VEC_PUSH(vec, item)                                                              \
    do {                                                                                 \
        if ((vec).n == (vec).cap) {                                                      \
            (vec).cap = (vec).cap ? (vec).cap * 2 : 256;                                 \
            void *grown_ = realloc((vec).v, (vec).cap * sizeof *(vec).v);                \
            if (!grown_) {                                                               \
                fprintf(stderr, "profilesim: out of memory\n");                          \
                exit(2);                                                                 \
            }                                                                            \
            (vec).v = grown_;                                                            \
        }                                                                                \
        (vec).v[(vec).n++] = (item);                                                     \
    } while (0)

typedef struct checker {
    const sim_options *o;
    int final;
    long violations, printed;
    journals j;
} checker;

static void violation(checker *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void violation(checker *c, const char *fmt, ...)
{
    c->violations++;
    if (c->printed++ >= PRINT_LIMIT) {
        if (c->printed == PRINT_LIMIT + 1)
            printf("  violation: … (more not shown)\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    printf("  violation%s: ", c->final ? "" : " (before drain)");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* ---- journals ------------------------------------------------------------------- */

static void parse_line(journals *j, int job, char *line)
{
    double t;
    char kind, key[64], id[48];
    long long a, b, c;
    double x;
    int n = 0;
    if (sscanf(line, "%lf %c %n", &t, &kind, &n) < 2)
        return;
    char *rest = line + n;
    if (kind == 'L' &&
        sscanf(rest, "%63s %lld %lld %lld %lf", key, &a, &b, &c, &x) == 5) {
        load_rec r = {sim_key_index(key), job, a, b, c, t, x};
        VEC_PUSH(j->loads, r);
        j->totals.loads++;
    } else if (kind == 'S' &&
               sscanf(rest, "%63s %lld %lld %lf %lld", key, &a, &b, &x, &c) == 5) {
        save_rec r = {sim_key_index(key), job, a, b, c, x, t};
        VEC_PUSH(j->saves, r);
        j->totals.saves++;
    } else if ((kind == 'G' || kind == 'P') && sscanf(rest, "%63s %47s", key, id) == 2) {
        named_rec r = {sim_key_index(key), ""};
        snprintf(r.id, sizeof r.id, "%s", id);
        if (kind == 'G') {
            VEC_PUSH(j->gifts, r);
            j->totals.gifts_accepted++;
        } else {
            VEC_PUSH(j->purchases, r);
            j->totals.purchases++;
        }
    } else if (kind == 'O' && sscanf(rest, "%63s %lld %lld", key, &a, &b) == 3) {
        obs_rec r = {sim_key_index(key), a, b, t};
        VEC_PUSH(j->observed, r);
    } else if (kind == 'E') {
        j->jobs.v[job].clean_exit = 1;
        if (strcmp(j->jobs.v[job].name, "watcher") != 0)
            j->totals.clean_exits++;
    } else if (kind == 'R') {
        j->totals.releases++;
    } else if (kind == 'U') {
        j->totals.unacked_releases++;
    } else if (kind == 'F') {
        j->totals.force_loads++;
    } else if (kind == 'X') {
        j->totals.lost++;
    } else if (kind == 'A') {
        j->totals.gifts_applied++;
    } else if (kind == 'B') {
        j->totals.stale_writes++;
    } else if (kind == 'I') {
        j->totals.issues++;
    }
}

static int read_journal(journals *j, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[2048];
    int job = -1;
    while (fgets(line, sizeof line, f)) {
        if (job < 0) {
            double t;
            job_rec r = {"", 0};
            if (sscanf(line, "%lf J %95s", &t, r.name) != 2)
                break; /* not a journal */
            VEC_PUSH(j->jobs, r);
            job = (int)j->jobs.n - 1;
            if (strcmp(r.name, "watcher") != 0)
                j->totals.servers_seen++;
            continue;
        }
        if (!strchr(line, '\n'))
            continue; /* a torn last line (cannot happen with one write per line) */
        parse_line(j, job, line);
    }
    fclose(f);
    return 0;
}

static int read_journals(journals *j, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "profilesim: cannot open journal directory %s\n", dir);
        return -1;
    }
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".log") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        read_journal(j, path);
    }
    closedir(d);
    return 0;
}

static void journals_dispose(journals *j)
{
    free(j->loads.v);
    free(j->saves.v);
    free(j->gifts.v);
    free(j->purchases.v);
    free(j->jobs.v);
    free(j->observed.v);
}

/* ---- the store ------------------------------------------------------------------ */

typedef struct store_docs {
    int n;
    json_t **doc; /* by player index; NULL when absent */
    ps_backend *b;
    const char *store;
    long keys, others;
} store_docs;

static int fetch_key(const char *key, void *ud)
{
    store_docs *s = ud;
    int idx = sim_key_index(key);
    if (idx < 0 || idx >= s->n) {
        s->others++;
        return 0;
    }
    ps_bytes bytes = {NULL, 0};
    if (s->b->get(&bytes, s->b, s->store, key) == PS_OK) {
        s->doc[idx] = json_loadb(bytes.data, bytes.len, 0, NULL);
        if (!s->doc[idx])
            s->doc[idx] = json_null(); /* undecodable: reported by the checks */
        s->keys++;
    }
    ps_bytes_dispose(&bytes);
    return 0;
}

static int load_store(store_docs *s, const sim_options *o, int players)
{
    s->n = players;
    s->store = o->store_name;
    s->doc = calloc((size_t)players, sizeof *s->doc);
    if (!s->doc || ps_backend_open(&s->b, sim_inner_url(o->store_url)) != PS_OK) {
        fprintf(stderr, "profilesim: checker cannot open the store: %s\n",
                ps_error_last()->message);
        return -1;
    }
    int rc = s->b->list(s->b, o->store_name, NULL, fetch_key, s);
    ps_backend_free(s->b);
    s->b = NULL;
    if (rc != PS_OK) {
        fprintf(stderr, "profilesim: checker cannot list the store: %s\n",
                ps_error_last()->message);
        return -1;
    }
    return 0;
}

static void store_dispose(store_docs *s)
{
    for (int i = 0; i < s->n; i++)
        json_decref(s->doc[i]);
    free(s->doc);
}

/* ---- checks on the journals ----------------------------------------------------- */

static int64_t jint(const json_t *v)
{
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static void key_name(char *out, int idx)
{
    sim_key(out, 32, idx);
}

/* Distinct SessionLoadCounts; no stale owner's acknowledged save; no load saw a
 * Seq behind an earlier acknowledgement. */
static void check_sessions(checker *c)
{
    journals *j = &c->j;
    char key[32];
    for (size_t a = 0; a < j->loads.n; a++) {
        load_rec *la = &j->loads.v[a];
        key_name(key, la->key);
        for (size_t b = a + 1; b < j->loads.n; b++) {
            load_rec *lb = &j->loads.v[b];
            if (lb->key == la->key && lb->count == la->count)
                violation(c, "%s: SessionLoadCount %lld given to two loads (%s and %s)",
                          key, (long long)la->count, j->jobs.v[la->job].name,
                          j->jobs.v[lb->job].name);
        }
        if (la->seq != la->saveseq)
            violation(c,
                      "%s: loaded with Data.Seq %lld but MetaTags.SaveSeq %lld "
                      "(Data and MetaTags written apart)",
                      key, (long long)la->seq, (long long)la->saveseq);
    }
    for (size_t s = 0; s < j->saves.n; s++) {
        save_rec *sv = &j->saves.v[s];
        key_name(key, sv->key);
        for (size_t l = 0; l < j->loads.n; l++) {
            load_rec *ld = &j->loads.v[l];
            if (ld->key != sv->key)
                continue;
            if (ld->count > sv->count && ld->t_done < sv->t_snap)
                violation(c,
                          "%s: write by a stale owner: session %lld (%s) had save "
                          "Seq %lld acknowledged, taken %.3f s after session %lld (%s) "
                          "had loaded the profile",
                          key, (long long)sv->count, j->jobs.v[sv->job].name,
                          (long long)sv->seq, sv->t_snap - ld->t_done,
                          (long long)ld->count, j->jobs.v[ld->job].name);
            if (sv->t_ack < ld->t_req && sv->seq > ld->seq)
                violation(c,
                          "%s: lost write: a load by %s (session %lld) saw Seq %lld, "
                          "but Seq %lld had been acknowledged %.3f s before it began",
                          key, j->jobs.v[ld->job].name, (long long)ld->count,
                          (long long)ld->seq, (long long)sv->seq, ld->t_req - sv->t_ack);
        }
    }
}

/* What the watcher saw: per key, SessionLoadCount and Data.Seq never go back. An
 * absent field (-1: a gift-only document) is skipped. */
static void check_observed(checker *c, int players)
{
    int64_t(*last)[2] = calloc((size_t)players, sizeof *last);
    if (!last)
        exit(2);
    for (size_t i = 0; i < c->j.observed.n; i++) {
        obs_rec *o = &c->j.observed.v[i];
        if (o->key < 0 || o->key >= players)
            continue;
        char key[32];
        key_name(key, o->key);
        int64_t *l = last[o->key];
        if (o->count >= 0 && o->count < l[0])
            violation(c, "%s: the store went back from SessionLoadCount %lld to %lld",
                      key, (long long)l[0], (long long)o->count);
        if (o->seq >= 0 && o->seq < l[1])
            violation(c,
                      "%s: the store went back from Seq %lld to %lld (session %lld): an "
                      "older Data overwrote a newer one",
                      key, (long long)l[1], (long long)o->seq, (long long)o->count);
        if (o->count > l[0])
            l[0] = o->count;
        if (o->seq > l[1])
            l[1] = o->seq;
    }
    free(last);
}

/* ---- checks on the store -------------------------------------------------------- */

static int job_index(const journals *j, const char *name)
{
    for (size_t i = 0; i < j->jobs.n; i++)
        if (strcmp(j->jobs.v[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void check_lock(checker *c, sim_check *out, const char *key, const json_t *meta)
{
    json_t *as = json_object_get(meta, "ActiveSession");
    if (!json_is_array(as))
        return;
    const char *job = json_string_value(json_array_get(as, 1));
    int ji = job ? job_index(&c->j, job) : -1;
    if (c->final)
        violation(c, "%s: still locked by %s after the drain", key, job ? job : "?");
    else if (ji >= 0 && c->j.jobs.v[ji].clean_exit)
        violation(c, "%s: left locked by %s, which shut down cleanly", key, job);
    else if (ji >= 0)
        out->dead_locks++; /* held by a killed server: expected, the drain takes it */
    else
        printf("  note: %s is locked by %s, not a server of this run\n", key,
               job ? job : "?");
}

/* Gifts in Data.Gifts and in the stored global updates of one document. */
static void check_doc_gifts(checker *c, sim_check *out, const char *key,
                            const json_t *doc)
{
    json_t *gifts = json_object_get(json_object_get(doc, "Data"), "Gifts");
    const char *gid;
    json_t *n;
    json_object_foreach(gifts, gid, n)
    {
        if (jint(n) > 1)
            violation(c, "%s: gift %s applied %lld times", key, gid, (long long)jint(n));
    }
    json_t *list = json_array_get(json_object_get(doc, "GlobalUpdates"), 1);
    size_t i;
    json_t *u;
    json_array_foreach(list, i, u)
    {
        const char *g = json_string_value(json_object_get(json_array_get(u, 3), "Gift"));
        int locked = json_is_true(json_array_get(u, 2));
        if (g && jint(json_object_get(gifts, g)) >= 1)
            violation(c,
                      "%s: gift %s is in Data.Gifts yet still stored %s (it would be "
                      "applied again)",
                      key, g, locked ? "Locked" : "Active");
        if (c->final)
            violation(c, "%s: global update %s still %s after the drain", key,
                      g ? g : "?", locked ? "Locked" : "Active");
        else
            out->pending_gifts++;
    }
}

static void check_doc(checker *c, sim_check *out, int idx, const json_t *doc,
                      int64_t max_seq, int64_t max_plays, int64_t max_count)
{
    char key[32];
    key_name(key, idx);
    if (!json_is_object(doc)) {
        violation(c, "%s: stored document is not a JSON object", key);
        return;
    }
    json_t *data = json_object_get(doc, "Data"), *meta = json_object_get(doc, "MetaData");
    json_t *tags = json_object_get(meta, "MetaTags");
    check_doc_gifts(c, out, key, doc);
    if (!data && !meta) {
        if (max_seq > 0)
            violation(c, "%s: has no Data, but Seq %lld was acknowledged", key,
                      (long long)max_seq);
        return; /* a gift-only document */
    }
    check_lock(c, out, key, meta);
    int64_t seq = jint(json_object_get(data, "Seq")),
            saveseq = jint(json_object_get(tags, "SaveSeq"));
    if (saveseq >= 0 && seq != saveseq)
        violation(c, "%s: Data.Seq %lld but MetaTags.SaveSeq %lld", key, (long long)seq,
                  (long long)saveseq);
    if (seq < max_seq)
        violation(c, "%s: acknowledged save lost: stored Seq %lld < acknowledged %lld",
                  key, (long long)seq, (long long)max_seq);
    if (jint(json_object_get(data, "Plays")) < max_plays)
        violation(c, "%s: acknowledged plays lost: stored %lld < %lld", key,
                  (long long)jint(json_object_get(data, "Plays")), (long long)max_plays);
    if (jint(json_object_get(meta, "SessionLoadCount")) < max_count)
        violation(c, "%s: SessionLoadCount %lld is behind journaled session %lld", key,
                  (long long)jint(json_object_get(meta, "SessionLoadCount")),
                  (long long)max_count);
    json_t *bought = json_object_get(data, "Purchases"), *n;
    const char *pid;
    json_object_foreach(bought, pid, n)
    {
        if (jint(n) > 1)
            violation(c, "%s: purchase %s granted %lld times", key, pid,
                      (long long)jint(n));
    }
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(tags, "ProfilePurchaseIds"), i, v)
    {
        if (json_is_string(v) && jint(json_object_get(bought, json_string_value(v))) < 1)
            violation(c, "%s: purchase %s recorded in MetaTags but not granted in Data",
                      key, json_string_value(v));
    }
}

static void check_store(checker *c, sim_check *out, store_docs *st)
{
    int n = st->n;
    int64_t *max_seq = calloc((size_t)n, sizeof *max_seq);
    int64_t *max_plays = calloc((size_t)n, sizeof *max_plays);
    int64_t *max_count = calloc((size_t)n, sizeof *max_count);
    if (!max_seq || !max_plays || !max_count)
        exit(2);
    for (size_t i = 0; i < c->j.saves.n; i++) {
        save_rec *s = &c->j.saves.v[i];
        if (s->key < 0 || s->key >= n)
            continue;
        if (s->seq > max_seq[s->key])
            max_seq[s->key] = s->seq;
        if (s->plays > max_plays[s->key])
            max_plays[s->key] = s->plays;
    }
    for (size_t i = 0; i < c->j.loads.n; i++) {
        load_rec *l = &c->j.loads.v[i];
        if (l->key >= 0 && l->key < n && l->count > max_count[l->key])
            max_count[l->key] = l->count;
    }
    for (int i = 0; i < n; i++) {
        char key[32];
        key_name(key, i);
        if (st->doc[i])
            check_doc(c, out, i, st->doc[i], max_seq[i], max_plays[i], max_count[i]);
        else if (max_seq[i] > 0 || max_count[i] > 0)
            violation(c,
                      "%s: missing from the store, but sessions and saves were journaled",
                      key);
    }
    free(max_seq);
    free(max_plays);
    free(max_count);
}

/* Every accepted gift and every confirmed purchase is in its target's Data. */
static void check_deliveries(checker *c, store_docs *st)
{
    for (size_t i = 0; i < c->j.gifts.n; i++) {
        named_rec *g = &c->j.gifts.v[i];
        if (g->key < 0 || g->key >= st->n)
            continue;
        json_t *gifts =
            json_object_get(json_object_get(st->doc[g->key], "Data"), "Gifts");
        char key[32];
        key_name(key, g->key);
        if (jint(json_object_get(gifts, g->id)) < 1)
            violation(c, "%s: accepted gift %s never applied", key, g->id);
    }
    for (size_t i = 0; i < c->j.purchases.n; i++) {
        named_rec *p = &c->j.purchases.v[i];
        if (p->key < 0 || p->key >= st->n)
            continue;
        json_t *bought =
            json_object_get(json_object_get(st->doc[p->key], "Data"), "Purchases");
        char key[32];
        key_name(key, p->key);
        if (jint(json_object_get(bought, p->id)) < 1)
            violation(c, "%s: confirmed purchase %s missing from Data", key, p->id);
    }
}

int sim_check_run(sim_check *out, const sim_options *o, int final)
{
    checker c;
    memset(&c, 0, sizeof c);
    memset(out, 0, sizeof *out);
    c.o = o;
    c.final = final;
    if (read_journals(&c.j, o->journal_dir) != 0)
        return -1;
    store_docs st;
    memset(&st, 0, sizeof st);
    if (load_store(&st, o, o->players) != 0) {
        journals_dispose(&c.j);
        return -1;
    }
    out->keys = st.keys;
    check_store(&c, out, &st);
    if (final) {
        check_sessions(&c);
        check_observed(&c, o->players);
        check_deliveries(&c, &st);
    }
    out->violations = c.violations;
    out->totals = c.j.totals;
    store_dispose(&st);
    journals_dispose(&c.j);
    return 0;
}
