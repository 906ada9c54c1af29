/*
 * server.c — one game-server process, running the library the way a game server does:
 * one loop calling ps_service_update every ~10 ms, players joining with the
 * non-blocking ForceLoad, playing, buying, gifting, hopping and leaving; and the
 * drain server that, after the run, loads every stored key once to process what is
 * still pending.
 *
 * Acknowledgement rule (what the journal's "S" line means): the library has no
 * per-save callback, so every save is stamped in its before-save hook with a new
 * counter, written both to Data.Seq and to the meta tag SaveSeq. MetaTagsLatest is
 * refreshed only by a save that wrote, so once MetaTagsLatest.SaveSeq shows a stamp,
 * the Data carrying that stamp is durably stored: that is the acknowledgement.
 * Purchases follow ProfileService's documented receipt pattern: the purchase id goes
 * into MetaTags.ProfilePurchaseIds together with the grant in Data, and the purchase
 * counts as granted only once MetaTagsLatest shows the id.
 */
#include "sim.h"

#include "backend/backends.h" /* ps__faulty_stats: what faulty: injected */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PEND_MAX 64       /* stamped saves awaiting their acknowledgement */
#define RECEIPTS_MAX 4    /* unconfirmed purchase receipts per player */
#define LOG_MAX 8         /* Data.Log is bounded */
#define PURCHASE_CACHE 20 /* MetaTags.ProfilePurchaseIds, as the seed's example */
#define MAX_LOADING 32
#define RELEASE_ACK_TIMEOUT 15.0
#define DRAIN_TIMEOUT 90.0
#define STALE_WRITES_MAX 3

typedef struct pending_save {
    int64_t seq;
    double t_snap;
    int64_t plays;
} pending_save;

typedef struct server server;
typedef struct session session;

/* One load → active → released/lost life of a profile in this process. */
struct session {
    server *srv;
    int idx;
    ps_profile *profile; /* NULL while loading */
    double t_req;
    int64_t count;      /* SessionLoadCount of this session */
    int64_t seq, acked; /* last stamp given, last stamp seen in MetaTagsLatest */
    pending_save pend[PEND_MAX];
    int npend;
    int releasing, lost, want_save, pending_locks;
    int64_t release_seq;
    double t_release;
    session *next; /* in srv->retired */
};

typedef struct player {
    session *sess; /* loading or active here */
    double retry_at;
    char receipts[RECEIPTS_MAX][40];
    int nreceipts;
    int drain_want, drain_done;
} player;

typedef struct stale_plan {
    int active;
    int idx;
    json_t *data;
    int64_t count, seq;
    double due;
} stale_plan;

struct server {
    const sim_options *o;
    sim_board *board;
    sim_stats *stats;
    int index, restart, drain;
    const char *job;
    ps_service *service;
    ps_profile_store *store;
    sim_journal *journal;
    uint64_t rng;
    player *players;
    int nplayers;
    session *retired; /* releasing or lost: awaiting their last acknowledgement */
    int online, loading;
    long gifts_started, purchases_started;
    int issues_logged;
    stale_plan stale;
    int stale_writes;
    ps_backend *raw;
    long fault_base[3]; /* the slot's counts from earlier runs of this slot */
};

static volatile sig_atomic_t g_stop;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ---- small helpers -------------------------------------------------------------- */

void sim_key(char *out, size_t size, int index)
{
    snprintf(out, size, "player-%04d", index);
}

int sim_key_index(const char *key)
{
    char *end = NULL;
    if (strncmp(key, "player-", 7) != 0)
        return -1;
    long v = strtol(key + 7, &end, 10);
    if (!end || *end || v < 0 || v >= SIM_MAX_PLAYERS)
        return -1;
    return (int)v;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int rng_below(server *sv, int n)
{
    return n > 0 ? (int)(rng_next(&sv->rng) % (uint64_t)n) : 0;
}

static double rng_unit(server *sv)
{
    return (double)(rng_next(&sv->rng) >> 11) / 9007199254740992.0;
}

static int64_t json_int_or(const json_t *v, int64_t dflt)
{
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static const char *skey(const session *s)
{
    return ps_profile_key(s->profile);
}

static int here(const server *sv)
{
    return sv->index + 1;
}

static int location(const server *sv, int idx)
{
    return atomic_load(&sv->board->location[idx]);
}

/* ---- acknowledgements ----------------------------------------------------------- */

/* Stamps a save: Data.Seq and the meta tag SaveSeq get the next counter. */
static void stamp(session *s)
{
    json_t *data = ps_profile_data(s->profile);
    s->seq++;
    json_object_set_new(data, "Seq", json_integer(s->seq));
    ps_profile_set_meta_tag_new(s->profile, "SaveSeq", json_integer(s->seq));
    if (s->npend == PEND_MAX) { /* the oldest is superseded by the newer ones */
        memmove(&s->pend[0], &s->pend[1], (PEND_MAX - 1) * sizeof s->pend[0]);
        s->npend--;
    }
    s->pend[s->npend++] =
        (pending_save){s->seq, sim_now(), json_int_or(json_object_get(data, "Plays"), 0)};
}

/* The before-save hook: every save of an active profile gets its own stamp. A release
 * save finds the profile already inactive: do_release stamped it beforehand. */
static int before_save(ps_profile *profile, void *userdata)
{
    session *s = userdata;
    if (ps_profile_is_active(profile))
        stamp(s);
    return 0;
}

static int id_in(const json_t *list, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), id) == 0)
            return 1;
    }
    return 0;
}

/* Receipts whose id MetaTagsLatest shows are granted for good. */
static void confirm_purchases(server *sv, session *s, const json_t *latest)
{
    player *pl = &sv->players[s->idx];
    json_t *ids = json_object_get(latest, "ProfilePurchaseIds");
    for (int i = 0; i < pl->nreceipts;) {
        if (!id_in(ids, pl->receipts[i])) {
            i++;
            continue;
        }
        sim_journal_write(sv->journal, "P %s %s %lld", skey(s), pl->receipts[i],
                          (long long)s->count);
        atomic_fetch_add(&sv->stats->purchases, 1);
        memmove(pl->receipts[i], pl->receipts[i + 1],
                (size_t)(pl->nreceipts - i - 1) * sizeof pl->receipts[0]);
        pl->nreceipts--;
    }
}

static void poll_acks(server *sv, session *s)
{
    const json_t *latest = ps_profile_meta_tags_latest(s->profile);
    int64_t seq = json_int_or(json_object_get(latest, "SaveSeq"), 0);
    if (seq > s->acked) {
        int keep = 0;
        for (int i = 0; i < s->npend; i++) {
            pending_save *p = &s->pend[i];
            if (p->seq == seq) {
                sim_journal_write(sv->journal, "S %s %lld %lld %.6f %lld", skey(s),
                                  (long long)seq, (long long)s->count, p->t_snap,
                                  (long long)p->plays);
                atomic_fetch_add(&sv->stats->saves, 1);
            }
            if (p->seq > seq)
                s->pend[keep++] = *p;
        }
        s->npend = keep;
        s->acked = seq;
    }
    confirm_purchases(sv, s, latest);
}

/* ---- sessions ------------------------------------------------------------------- */

static void session_free(session *s)
{
    if (s->profile) {
        ps_profile_set_before_save(s->profile, NULL, NULL);
        ps_profile_free(s->profile);
    }
    free(s);
}

static void retire(server *sv, session *s)
{
    player *pl = &sv->players[s->idx];
    if (pl->sess == s) {
        pl->sess = NULL;
        sv->online--;
    }
    s->next = sv->retired;
    sv->retired = s;
}

static void do_release(server *sv, session *s)
{
    stamp(s); /* the release save carries the last stamp */
    s->release_seq = s->seq;
    s->releasing = 1;
    s->t_release = sim_now();
    retire(sv, s);
    ps_profile_release(s->profile);
}

/* Plans the deliberate stale write of --break-fencing (server 0 only). */
static void plan_stale_write(server *sv, session *s)
{
    if (!sv->o->break_fencing || sv->index != 0 || sv->stale.active ||
        sv->stale_writes >= STALE_WRITES_MAX)
        return;
    sv->stale = (stale_plan){.active = 1,
                             .idx = s->idx,
                             .data = json_deep_copy(ps_profile_data(s->profile)),
                             .count = s->count,
                             .seq = s->seq + 1,
                             .due = sim_now() + 1.5};
}

/* ListenToRelease: our own release (ignored) or the session was taken over. */
static void on_release(ps_profile *profile, int64_t place, const char *job, void *ud)
{
    session *s = ud;
    server *sv = s->srv;
    (void)profile;
    if (s->releasing || s->lost)
        return;
    s->lost = 1;
    sim_journal_write(sv->journal, "X %s %lld %lld %s", skey(s), (long long)s->count,
                      (long long)place, job ? job : "-");
    atomic_fetch_add(&sv->stats->lost, 1);
    plan_stale_write(sv, s);
    retire(sv, s);
}

/* Processes the retired list: last acknowledgements, then the handle goes. */
static void poll_retired(server *sv, int final)
{
    session **link = &sv->retired;
    double now = sim_now();
    while (*link) {
        session *s = *link;
        poll_acks(sv, s);
        int done = s->lost;
        if (s->releasing && s->acked >= s->release_seq) {
            sim_journal_write(sv->journal, "R %s %lld %lld", skey(s), (long long)s->count,
                              (long long)s->release_seq);
            done = 1;
        } else if (s->releasing && (final || now - s->t_release > RELEASE_ACK_TIMEOUT)) {
            /* The release write found the session gone (stolen): nothing to ack. */
            sim_journal_write(sv->journal, "U %s %lld %lld", skey(s), (long long)s->count,
                              (long long)s->release_seq);
            done = 1;
        }
        if (done) {
            *link = s->next;
            session_free(s);
        } else {
            link = &s->next;
        }
    }
}

/* ---- gifts (global updates) ----------------------------------------------------- */

static void apply_gift(session *s, const json_t *update)
{
    server *sv = s->srv;
    const char *gid = json_string_value(json_object_get(update, "Gift"));
    if (!gid) {
        sim_journal_write(sv->journal, "I %s unexpected global update", skey(s));
        return;
    }
    json_t *data = ps_profile_data(s->profile);
    json_t *gifts = json_object_get(data, "Gifts");
    if (!json_is_object(gifts)) {
        gifts = json_object();
        json_object_set_new(data, "Gifts", gifts);
    }
    int64_t n = json_int_or(json_object_get(gifts, gid), 0) + 1;
    json_object_set_new(gifts, gid, json_integer(n));
    sim_journal_write(sv->journal, "A %s %s %lld %lld", skey(s), gid, (long long)n,
                      (long long)s->count);
    atomic_fetch_add(&sv->stats->gifts_applied, 1);
}

static void on_new_active(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    session *s = ud;
    (void)data;
    if (ps_global_updates_lock_active_update(gu, id) == PS_OK) {
        s->pending_locks++;
        s->want_save = 1;
    }
}

/* The documented exactly-once flow: apply to Data and clear in the same tick, so the
 * change and the removal reach the store in one write. */
static void on_new_locked(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    session *s = ud;
    apply_gift(s, data);
    if (ps_global_updates_clear_locked_update(gu, id) == PS_OK)
        s->want_save = 1;
    if (s->pending_locks > 0)
        s->pending_locks--;
}

/* After a load: locked → apply and clear; active → lock (SEMANTICS.md §7). */
static void scan_updates(session *s)
{
    ps_global_updates *gu = ps_profile_global_updates(s->profile);
    json_t *list = NULL, *pair;
    size_t i;
    if (ps_global_updates_get_locked_updates(&list, gu) == PS_OK) {
        json_array_foreach(list, i, pair)
        {
            int64_t id = json_int_or(json_array_get(pair, 0), 0);
            apply_gift(s, json_array_get(pair, 1));
            if (ps_global_updates_clear_locked_update(gu, id) == PS_OK)
                s->want_save = 1;
        }
        json_decref(list);
    }
    if (ps_global_updates_get_active_updates(&list, gu) == PS_OK) {
        json_array_foreach(list, i, pair)
        {
            int64_t id = json_int_or(json_array_get(pair, 0), 0);
            if (ps_global_updates_lock_active_update(gu, id) == PS_OK) {
                s->pending_locks++;
                s->want_save = 1;
            }
        }
        json_decref(list);
    }
}

typedef struct gift {
    server *srv;
    char to[32], id[48], from[32];
} gift;

static void gift_handler(ps_global_updates *gu, void *ud)
{
    gift *g = ud;
    ps_global_updates_add_active_update_new(
        gu, json_pack("{s:s, s:s}", "Gift", g->id, "From", g->from), NULL);
}

static void gift_done(int status, ps_global_updates *result, void *ud)
{
    gift *g = ud;
    server *sv = g->srv;
    if (status == PS_OK) {
        sim_journal_write(sv->journal, "G %s %s", g->to, g->id);
        atomic_fetch_add(&sv->stats->gifts_sent, 1);
    }
    ps_global_updates_free(result);
    free(g);
}

static void send_gift(server *sv, session *from)
{
    gift *g = calloc(1, sizeof *g);
    if (!g)
        return;
    g->srv = sv;
    sim_key(g->to, sizeof g->to, rng_below(sv, sv->nplayers));
    snprintf(g->id, sizeof g->id, "g%s.%d.%d.%ld", sv->o->run_tag, sv->index, sv->restart,
             ++sv->gifts_started);
    snprintf(g->from, sizeof g->from, "%s", from ? skey(from) : "system");
    if (ps_store_global_update_profile_async(sv->store, g->to, gift_handler, gift_done,
                                             g) != PS_OK)
        free(g);
}

/* ---- purchases ------------------------------------------------------------------ */

/* The seed's receipt pattern: grant only when the id is not in the local MetaTags,
 * record the id there; the grant and the id reach the store in the same save. */
static void deliver_receipts(server *sv, session *s)
{
    player *pl = &sv->players[s->idx];
    for (int i = 0; i < pl->nreceipts; i++) {
        const json_t *ids = ps_profile_get_meta_tag(s->profile, "ProfilePurchaseIds");
        if (id_in(ids, pl->receipts[i]))
            continue; /* granted already; waiting for MetaTagsLatest */
        json_t *data = ps_profile_data(s->profile);
        json_t *bought = json_object_get(data, "Purchases");
        if (!json_is_object(bought)) {
            bought = json_object();
            json_object_set_new(data, "Purchases", bought);
        }
        int64_t n = json_int_or(json_object_get(bought, pl->receipts[i]), 0) + 1;
        json_object_set_new(bought, pl->receipts[i], json_integer(n));
        json_object_set_new(
            data, "Coins",
            json_integer(json_int_or(json_object_get(data, "Coins"), 0) + 100));
        json_t *cache = json_is_array(ids) ? json_deep_copy(ids) : json_array();
        while (json_array_size(cache) >= PURCHASE_CACHE)
            json_array_remove(cache, 0);
        json_array_append_new(cache, json_string(pl->receipts[i]));
        ps_profile_set_meta_tag_new(s->profile, "ProfilePurchaseIds", cache);
        s->want_save = 1;
    }
}

static void buy(server *sv, session *s)
{
    player *pl = &sv->players[s->idx];
    if (pl->nreceipts == RECEIPTS_MAX)
        return;
    char *receipt = pl->receipts[pl->nreceipts];
    int n = snprintf(receipt, sizeof pl->receipts[0], "p%s.%d.%d.%ld", sv->o->run_tag,
                     sv->index, sv->restart, ++sv->purchases_started);
    if (n < 0 || (size_t)n >= sizeof pl->receipts[0])
        return; /* a purchase id must never be cut short: two could then collide */
    pl->nreceipts++;
    deliver_receipts(sv, s);
}

/* ---- loading -------------------------------------------------------------------- */

static ps_not_released_action on_not_released(int64_t place, const char *job, void *ud)
{
    session *s = ud;
    server *sv = s->srv;
    char key[32];
    sim_key(key, sizeof key, s->idx);
    sim_journal_write(sv->journal, "F %s %lld %s", key, (long long)place,
                      job ? job : "-");
    atomic_fetch_add(&sv->stats->force_loads, 1);
    return PS_FORCE_LOAD;
}

static void setup_session(server *sv, session *s)
{
    ps_profile *p = s->profile;
    ps_global_updates *gu = ps_profile_global_updates(p);
    ps_profile_listen_to_release(NULL, p, on_release, s, NULL);
    ps_profile_set_before_save(p, before_save, s);
    ps_global_updates_listen_to_new_active_update(NULL, gu, on_new_active, s, NULL);
    ps_global_updates_listen_to_new_locked_update(NULL, gu, on_new_locked, s, NULL);
    scan_updates(s);
    deliver_receipts(sv, s);
}

static void load_done(int status, ps_profile *profile, void *ud)
{
    session *s = ud;
    server *sv = s->srv;
    player *pl = &sv->players[s->idx];
    sv->loading--;
    if (status != PS_OK) {
        if (pl->sess == s)
            pl->sess = NULL;
        pl->retry_at = sim_now() + 0.5 + rng_unit(sv);
        free(s);
        return;
    }
    s->profile = profile;
    json_t *data = ps_profile_data(profile);
    s->seq = json_int_or(json_object_get(data, "Seq"), 0);
    s->count = ps_profile_session_load_count(profile);
    const json_t *latest = ps_profile_meta_tags_latest(profile);
    s->acked = json_int_or(json_object_get(latest, "SaveSeq"), 0);
    sim_journal_write(sv->journal, "L %s %lld %lld %lld %.6f", skey(s),
                      (long long)s->count, (long long)s->seq, (long long)s->acked,
                      s->t_req);
    atomic_fetch_add(&sv->stats->loads, 1);
    sv->online++;
    setup_session(sv, s);
    if (!sv->drain && location(sv, s->idx) != here(sv))
        do_release(sv, s); /* the player moved on while we were loading */
}

static void start_load(server *sv, int idx)
{
    session *s = calloc(1, sizeof *s);
    if (!s)
        return;
    char key[32];
    sim_key(key, sizeof key, idx);
    s->srv = sv;
    s->idx = idx;
    s->t_req = sim_now();
    if (ps_store_load_profile_async(sv->store, key, on_not_released, load_done, s) !=
        PS_OK) {
        sim_journal_write(sv->journal, "I %s load refused: %s", key,
                          ps_error_last()->message);
        sv->players[idx].retry_at = sim_now() + 1;
        free(s);
        return;
    }
    sv->players[idx].sess = s;
    sv->loading++;
}

/* Players the board puts on this server and that are not loaded here yet. */
static void load_arrivals(server *sv)
{
    double now = sim_now();
    for (int i = 0; i < sv->nplayers && sv->loading < MAX_LOADING; i++) {
        player *pl = &sv->players[i];
        if (!pl->sess && now >= pl->retry_at && location(sv, i) == here(sv))
            start_load(sv, i);
    }
}

/* ---- the break-fencing stale write ---------------------------------------------- */

typedef struct stale_ctx {
    stale_plan *plan;
} stale_ctx;

/* A stale owner with no session check: it writes its old Data over whatever is
 * stored, exactly what the SessionLoadCount fence exists to prevent. */
static int stale_transform(ps_write *out, const ps_bytes *current, void *ud)
{
    stale_plan *plan = ud;
    if (!current)
        return PS_ENOTFOUND;
    json_t *doc = json_loadb(current->data, current->len, 0, NULL);
    json_t *meta = json_object_get(doc, "MetaData");
    json_t *tags = json_object_get(meta, "MetaTags");
    if (!json_is_object(tags)) {
        json_decref(doc);
        return PS_ECORRUPT;
    }
    json_t *data = json_deep_copy(plan->data);
    json_object_set_new(data, "Seq", json_integer(plan->seq));
    json_object_set_new(doc, "Data", data);
    json_object_set_new(tags, "SaveSeq", json_integer(plan->seq));
    out->doc.data = json_dumps(doc, JSON_COMPACT);
    out->doc.len = out->doc.data ? strlen(out->doc.data) : 0;
    json_decref(doc);
    return out->doc.data ? PS_OK : PS_ENOMEM;
}

static void run_stale_write(server *sv)
{
    stale_plan *plan = &sv->stale;
    if (!plan->active || sim_now() < plan->due)
        return;
    char key[32];
    sim_key(key, sizeof key, plan->idx);
    double t_snap = sim_now();
    if (!sv->raw && ps_backend_open(&sv->raw, sim_inner_url(sv->o->store_url)) != PS_OK)
        sv->raw = NULL;
    int rc = sv->raw
                 ? sv->raw->update(sv->raw, sv->o->store_name, key, stale_transform, plan)
                 : PS_EBACKEND;
    if (rc == PS_OK) {
        /* A broken library would have reported this save as done: journal it so. */
        sim_journal_write(sv->journal, "B %s %lld %lld", key, (long long)plan->count,
                          (long long)plan->seq);
        sim_journal_write(
            sv->journal, "S %s %lld %lld %.6f %lld", key, (long long)plan->seq,
            (long long)plan->count, t_snap,
            (long long)json_int_or(json_object_get(plan->data, "Plays"), 0));
        sv->stale_writes++;
    }
    json_decref(plan->data);
    *plan = (stale_plan){.active = 0};
}

/* ---- actions -------------------------------------------------------------------- */

/* A random player active here (not releasing); NULL when none is found quickly. */
static session *random_session(server *sv)
{
    if (sv->online == 0)
        return NULL;
    for (int tries = 0; tries < 64; tries++) {
        session *s = sv->players[rng_below(sv, sv->nplayers)].sess;
        if (s && s->profile)
            return s;
    }
    return NULL;
}

static void play(session *s)
{
    json_t *data = ps_profile_data(s->profile);
    int64_t plays = json_int_or(json_object_get(data, "Plays"), 0) + 1;
    json_object_set_new(data, "Plays", json_integer(plays));
    json_object_set_new(data, "Coins",
                        json_integer(json_int_or(json_object_get(data, "Coins"), 0) + 1));
    json_t *log = json_object_get(data, "Log");
    if (!json_is_array(log)) {
        log = json_array();
        json_object_set_new(data, "Log", log);
    }
    while (json_array_size(log) >= LOG_MAX)
        json_array_remove(log, 0);
    json_array_append_new(
        log, json_pack("{s:s, s:I}", "By", s->srv->job, "Play", (json_int_t)plays));
}

static void join(server *sv)
{
    for (int tries = 0; tries < 16; tries++) {
        int idx = rng_below(sv, sv->nplayers), expected = 0;
        if (atomic_compare_exchange_strong(&sv->board->location[idx], &expected,
                                           here(sv)))
            return; /* load_arrivals loads it */
    }
}

/* Leave (to == 0) or hop to server to - 1: only a player who is here can go. */
static void depart(server *sv, session *s, int to)
{
    int expected = here(sv);
    if (!atomic_compare_exchange_strong(&sv->board->location[s->idx], &expected, to))
        return;
    atomic_fetch_add(to ? &sv->stats->hops : &sv->stats->leaves, 1);
    do_release(sv, s);
}

/* A player shows up here while another server still has them (that server hangs on
 * to the session): this server force-loads and, after force_load_max_steps, steals. */
static void rejoin_elsewhere(server *sv)
{
    for (int tries = 0; tries < 16; tries++) {
        int idx = rng_below(sv, sv->nplayers);
        int cur = location(sv, idx);
        if (cur != 0 && cur != here(sv) &&
            atomic_compare_exchange_strong(&sv->board->location[idx], &cur, here(sv)))
            return;
    }
}

static void random_action(server *sv)
{
    atomic_fetch_add(&sv->stats->ops, 1);
    int target = sv->nplayers * 6 / 10 / sv->o->servers;
    int r = rng_below(sv, 100);
    if (sv->online + sv->loading < target && r < 30) {
        join(sv);
        return;
    }
    session *s = random_session(sv);
    if (!s) {
        join(sv);
        return;
    }
    if (r < 60)
        play(s);
    else if (r < 66)
        buy(sv, s);
    else if (r < 80)
        send_gift(sv, s);
    else if (r < 84 && sv->o->servers > 1)
        depart(sv, s,
               1 + (sv->index + 1 + rng_below(sv, sv->o->servers - 1)) % sv->o->servers);
    else if (r < 88)
        depart(sv, s, 0);
    else if (r < 90)
        rejoin_elsewhere(sv);
    else
        play(s);
}

/* Explicit saves asked for by purchases and global updates (never inside listeners). */
static void flush_saves(server *sv)
{
    for (int i = 0; i < sv->nplayers; i++) {
        session *s = sv->players[i].sess;
        if (s && s->profile && s->want_save) {
            s->want_save = 0;
            ps_profile_save(s->profile);
        }
    }
}

static void poll_active(server *sv)
{
    for (int i = 0; i < sv->nplayers; i++) {
        session *s = sv->players[i].sess;
        if (s && s->profile)
            poll_acks(sv, s);
    }
}

/* ---- drain mode ----------------------------------------------------------------- */

static int collect_key(const char *key, void *ud)
{
    server *sv = ud;
    int idx = sim_key_index(key);
    if (idx >= 0 && idx < sv->nplayers)
        sv->players[idx].drain_want = 1;
    return 0;
}

/* Every stored key: loaded once, its global updates processed, released. */
static int drain_step(server *sv)
{
    int busy = sv->retired != NULL;
    double now = sim_now();
    for (int i = 0; i < sv->nplayers; i++) {
        player *pl = &sv->players[i];
        if (!pl->drain_want || pl->drain_done)
            continue;
        busy = 1;
        session *s = pl->sess;
        if (!s) {
            if (sv->loading < MAX_LOADING && now >= pl->retry_at)
                start_load(sv, i);
            continue;
        }
        if (!s->profile)
            continue;
        json_t *active = NULL, *locked = NULL;
        ps_global_updates *gu = ps_profile_global_updates(s->profile);
        ps_global_updates_get_active_updates(&active, gu);
        ps_global_updates_get_locked_updates(&locked, gu);
        int idle = json_array_size(active) == 0 && json_array_size(locked) == 0 &&
                   s->pending_locks == 0;
        json_decref(active);
        json_decref(locked);
        if (idle) {
            pl->drain_done = 1;
            do_release(sv, s);
        }
    }
    return busy;
}

/* Publishes this process's faulty: totals (added to the slot's earlier runs). */
static void publish_faults(server *sv)
{
    ps_faulty_stats f;
    if (ps__faulty_stats(&f, NULL) != PS_OK)
        return;
    atomic_store(&sv->stats->fault_errors, sv->fault_base[0] + (long)f.errors);
    atomic_store(&sv->stats->fault_lost_replies,
                 sv->fault_base[1] + (long)f.lost_replies);
    atomic_store(&sv->stats->fault_conflicts, sv->fault_base[2] + (long)f.conflicts);
}

/* ---- the process ---------------------------------------------------------------- */

static void on_issue(const char *message, const char *store, const char *key, void *ud)
{
    server *sv = ud;
    (void)store;
    atomic_fetch_add(&sv->stats->issues, 1);
    if (sv->issues_logged++ < 50) {
        char clean[300];
        snprintf(clean, sizeof clean, "%s", message ? message : "");
        for (char *c = clean; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        sim_journal_write(sv->journal, "I %s %s", key ? key : "-", clean);
    }
}

static int server_open(server *sv, const sim_options *o, const sim_server_args *a)
{
    ps_config config;
    ps_config_init(&config);
    config.store_url = o->store_url;
    config.place_id = sv->drain ? 999 : 1000 + a->index;
    config.job_id = a->job_id;
    config.auto_save_period = o->auto_save_period;
    config.load_repeat_delay = o->load_repeat_delay;
    config.force_load_max_steps = o->force_load_max_steps;
    config.assume_dead_session_lock = o->assume_dead_session_lock;
    if (ps_service_new(&sv->service, &config) != PS_OK) {
        fprintf(stderr, "profilesim: server %d: %s\n", a->index,
                ps_error_last()->message);
        return -1;
    }
    ps_service_issue_signal_connect(NULL, sv->service, on_issue, sv, NULL);
    json_t *template_ = json_pack("{s:i, s:i, s:i, s:[], s:{}, s:{}}", "Plays", 0,
                                  "Coins", 0, "Seq", 0, "Log", "Gifts", "Purchases");
    int rc =
        ps_service_get_profile_store(&sv->store, sv->service, o->store_name, template_);
    json_decref(template_);
    if (rc != PS_OK) {
        fprintf(stderr, "profilesim: %s\n", ps_error_last()->message);
        return -1;
    }
    return 0;
}

static int drain_list_keys(server *sv)
{
    ps_backend *b = NULL;
    int rc = ps_backend_open(&b, sim_inner_url(sv->o->store_url));
    if (rc == PS_OK)
        rc = b->list ? b->list(b, sv->o->store_name, NULL, collect_key, sv) : PS_EINVAL;
    if (rc != PS_OK)
        fprintf(stderr, "profilesim: drain: cannot list keys: %s\n",
                ps_error_last()->message);
    ps_backend_free(b);
    return rc == PS_OK ? 0 : -1;
}

/* One tick of a game server: the library, then acknowledgements and the players. */
static void game_tick(server *sv, double *credit, double *last)
{
    double now = sim_now();
    *credit += (now - *last) * sv->o->ops_per_second;
    *last = now;
    for (int n = 0; *credit >= 1 && n < 100; n++, *credit -= 1)
        random_action(sv);
    if (*credit > 100)
        *credit = 0; /* after a stall, do not burst */
    load_arrivals(sv);
    run_stale_write(sv);
}

static void main_loop(server *sv)
{
    double credit = 0, last = sim_now(), drain_end = sim_now() + DRAIN_TIMEOUT;
    while (!g_stop) {
        double t0 = sim_now();
        ps_service_update(sv->service);
        poll_active(sv);
        poll_retired(sv, 0);
        if (sv->drain) {
            if (!drain_step(sv) || t0 > drain_end)
                break;
        } else {
            game_tick(sv, &credit, &last);
        }
        flush_saves(sv);
        publish_faults(sv);
        double spent = sim_now() - t0;
        if (spent < 0.010)
            usleep((useconds_t)((0.010 - spent) * 1e6));
    }
}

/* BindToClose the way a game does it: every player is released (stamped), then the
 * service shuts down and waits for the release writes. */
static void server_stop(server *sv)
{
    for (int i = 0; i < sv->nplayers; i++) {
        session *s = sv->players[i].sess;
        if (s && s->profile)
            do_release(sv, s);
    }
    ps_service_shutdown(sv->service);
    publish_faults(sv);
    poll_retired(sv, 1);
    int left = 0;
    for (int i = 0; i < sv->nplayers; i++)
        if (sv->players[i].drain_want && !sv->players[i].drain_done)
            left++;
    if (sv->drain && left)
        sim_journal_write(sv->journal, "I - drain left %d keys unprocessed", left);
    sim_journal_write(sv->journal, "E %s", sv->job);
    ps_service_free(sv->service);
    if (sv->stale.data)
        json_decref(sv->stale.data);
    ps_backend_free(sv->raw);
}

int sim_server_main(const sim_options *o, sim_board *board, const sim_server_args *a)
{
    signal(SIGTERM, on_term);
    signal(SIGINT, SIG_IGN); /* ^C goes to the parent, which stops us with SIGTERM */
    server sv;
    memset(&sv, 0, sizeof sv);
    sv.o = o;
    sv.board = board;
    sv.index = a->index;
    sv.restart = a->restart;
    sv.drain = a->index < 0;
    sv.job = a->job_id;
    sv.stats = &board->stats[sv.drain ? SIM_DRAIN_SLOT : a->index];
    sv.rng = o->seed + (uint64_t)(a->index + 1) + 7919ULL * (uint64_t)a->restart;
    sv.nplayers = board->players;
    sv.fault_base[0] = atomic_load(&sv.stats->fault_errors);
    sv.fault_base[1] = atomic_load(&sv.stats->fault_lost_replies);
    sv.fault_base[2] = atomic_load(&sv.stats->fault_conflicts);
    sv.players = calloc((size_t)sv.nplayers, sizeof *sv.players);
    sv.journal = sim_journal_open(a->journal_path);
    if (!sv.players || !sv.journal) {
        fprintf(stderr, "profilesim: cannot open journal %s: %s\n", a->journal_path,
                strerror(errno));
        return 2;
    }
    sim_journal_write(sv.journal, "J %s %d %d %lld", a->job_id, a->index, a->restart,
                      (long long)o->seed);
    if ((sv.drain && drain_list_keys(&sv) != 0) || server_open(&sv, o, a) != 0) {
        sim_journal_close(sv.journal);
        free(sv.players);
        return 2;
    }
    main_loop(&sv);
    server_stop(&sv);
    sim_journal_close(sv.journal);
    free(sv.players);
    return 0;
}
