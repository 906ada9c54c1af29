/*
 * sim.h — profilesim internals: options, the shared-memory board the processes use
 * to move players around and to count operations for the progress line, journals,
 * the server process and the checker.
 *
 * Process model: the parent forks every server (and, at the end, one drain server)
 * before any ps_service exists; it never creates a service itself. The checker runs
 * in the parent after every child has exited and reads only the journals and the
 * stored documents (through the raw backend API), never a server's memory.
 */
#ifndef PROFILESIM_SIM_H
#define PROFILESIM_SIM_H

#include <profileservice.h>
#include <profileservice/backend.h>

#include <stdatomic.h>
#include <stdint.h>

#define SIM_MAX_SERVERS 64
#define SIM_MAX_PLAYERS 100000
#define SIM_DRAIN_SLOT SIM_MAX_SERVERS /* stats slot of the drain server */

typedef struct sim_options {
    const char *store_url;   /* "sqlite:profilesim.db" */
    const char *store_name;  /* profile store name, "Players" */
    const char *journal_dir; /* "profilesim-journal" */
    int servers, players;
    double duration;
    uint64_t seed;
    int chaos, keep, break_fencing, verbose;
    double ops_per_second; /* per server */
    /* library settings used by every server (printed in the report) */
    double auto_save_period, load_repeat_delay;
    int force_load_max_steps;
    double assume_dead_session_lock;
    char run_tag[16]; /* in gift and purchase ids: unique across runs on one store */
} sim_options;

/* Counters one server slot adds to (a restarted server keeps its slot). */
typedef struct sim_stats {
    atomic_long ops, loads, saves, force_loads, lost, gifts_sent, gifts_applied,
        purchases, hops, leaves, issues;
    /* faulty: injections, accumulated over the slot's restarts */
    atomic_long fault_errors, fault_lost_replies, fault_conflicts;
} sim_stats;

/* MAP_SHARED, created by the parent before the first fork. location[i]: 0 = the
 * player is offline, s + 1 = the player is (or should be) on server s. */
typedef struct sim_board {
    int players, servers;
    sim_stats stats[SIM_MAX_SERVERS + 1];
    atomic_int location[];
} sim_board;

/* ---- journal.c ------------------------------------------------------------------ */

/* Monotonic seconds, comparable between the processes of one machine. */
double sim_now(void);

typedef struct sim_journal sim_journal;
/* Opens (creates, appends to) a journal file. NULL on failure (errno set). */
sim_journal *sim_journal_open(const char *path);
/* Appends one line "<time> <formatted>\n" with a single write(2). */
void sim_journal_write(sim_journal *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sim_journal_close(sim_journal *j);

/* The URL under any "faulty:OPTIONS:" prefixes: the checker, the watcher and the
 * stale write of --break-fencing never suffer injected faults. */
const char *sim_inner_url(const char *url);

/* Removes every regular file in @p dir, creating @p dir when missing. */
int sim_journal_reset_dir(const char *dir);

/* ---- server.c ------------------------------------------------------------------- */

typedef struct sim_server_args {
    int index;   /* 0..servers-1, or -1 for the drain server */
    int restart; /* how many times this slot was restarted */
    const char *job_id;
    const char *journal_path;
} sim_server_args;

/* Runs one game-server process until SIGTERM (or, for the drain server, until every
 * stored key is processed). @return the process exit status. */
int sim_server_main(const sim_options *o, sim_board *board, const sim_server_args *a);

/* "player-0042" */
void sim_key(char *out, size_t size, int index);
int sim_key_index(const char *key);

/* ---- watcher.c ------------------------------------------------------------------ */

/* The read-only observer process (raw backend gets only): journals each change of a
 * key's (SessionLoadCount, Data.Seq) until SIGTERM. @return the exit status. */
int sim_watcher_main(const sim_options *o, const char *journal_path);

/* ---- checker.c ------------------------------------------------------------------ */

typedef struct sim_totals {
    long loads, saves, releases, unacked_releases, force_loads, lost, gifts_accepted,
        gifts_applied, purchases, stale_writes, issues, clean_exits, servers_seen;
} sim_totals;

typedef struct sim_check {
    long violations;
    long dead_locks;    /* sessions left by killed servers (expected; drained) */
    long pending_gifts; /* accepted gifts still Active/Locked before the drain */
    long keys;
    sim_totals totals;
} sim_check;

/* Checks the journals of @p o->journal_dir against the store. @p final is 0 before
 * the drain (pending gifts allowed, dead locks of killed servers allowed) and 1
 * after it (everything must be applied and unlocked). Prints each violation. */
int sim_check_run(sim_check *out, const sim_options *o, int final);

#endif /* PROFILESIM_SIM_H */
