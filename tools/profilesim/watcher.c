/*
 * watcher.c — a read-only observer process: sweeps every player's stored document
 * through the raw backend (get only; no service, never a write) and journals each
 * change of (MetaData.SessionLoadCount, Data.Seq) it sees as an "O" line. The checker
 * then requires both to be non-decreasing per key: a stale owner's write puts an
 * older Seq back, and the watcher sees it even when the new owner overwrites it again
 * a moment later (which hides it from the final store).
 */
#include "sim.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_term(int sig)
{
    (void)sig;
    g_stop = 1;
}

typedef struct seen {
    long long count, seq;
} seen;

static long long field_int(const json_t *v)
{
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

static void observe(sim_journal *j, ps_backend *b, const char *store, int idx, seen *last)
{
    char key[32];
    sim_key(key, sizeof key, idx);
    ps_bytes bytes = {NULL, 0};
    if (b->get(&bytes, b, store, key) != PS_OK)
        return;
    json_t *doc = json_loadb(bytes.data, bytes.len, 0, NULL);
    ps_bytes_dispose(&bytes);
    long long count =
        field_int(json_object_get(json_object_get(doc, "MetaData"), "SessionLoadCount"));
    long long seq = field_int(json_object_get(json_object_get(doc, "Data"), "Seq"));
    json_decref(doc);
    if (count != last->count || seq != last->seq) {
        sim_journal_write(j, "O %s %lld %lld", key, count, seq);
        last->count = count;
        last->seq = seq;
    }
}

int sim_watcher_main(const sim_options *o, const char *journal_path)
{
    signal(SIGTERM, on_term);
    signal(SIGINT, SIG_IGN);
    sim_journal *j = sim_journal_open(journal_path);
    seen *last = calloc((size_t)o->players, sizeof *last);
    ps_backend *b = NULL;
    if (!j || !last || ps_backend_open(&b, sim_inner_url(o->store_url)) != PS_OK) {
        fprintf(stderr, "profilesim: watcher cannot start: %s\n",
                ps_error_last()->message);
        return 2;
    }
    for (int i = 0; i < o->players; i++)
        last[i] = (seen){-2, -2};
    sim_journal_write(j, "J watcher -2 0 %llu", (unsigned long long)o->seed);
    while (!g_stop) {
        double t0 = sim_now();
        for (int i = 0; i < o->players && !g_stop; i++)
            observe(j, b, o->store_name, i, &last[i]);
        double spent = sim_now() - t0;
        if (spent < 0.02)
            usleep((useconds_t)((0.02 - spent) * 1e6));
    }
    sim_journal_write(j, "E watcher");
    ps_backend_free(b);
    sim_journal_close(j);
    free(last);
    return 0;
}
