/*
 * profilesim — ProfileService's main job, as a multi-process game simulation.
 *
 * The parent forks N game-server processes (server.c) on one store, moves nothing
 * itself but a progress line, optionally SIGKILLs and restarts servers (--chaos),
 * stops them with SIGTERM at the end, then checks (checker.c) the journals against the
 * store, runs a drain server that processes whatever is still pending, checks again,
 * and prints a report. Any violation exits 1.
 */
#include "sim.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STOP_TIMEOUT 60.0

static const char usage[] =
    "usage: profilesim [OPTIONS]\n"
    "\n"
    "Runs several game-server processes on one profile store, the way game servers use\n"
    "ProfileService: players join (ForceLoad), play, buy products, send gifts, hop\n"
    "between servers and leave. Every server journals each acknowledged operation; at\n"
    "the end an independent checker compares the journals with the store. Any\n"
    "violation of a safety property exits with status 1.\n"
    "\n"
    "Options:\n"
    "  --store URL        store to run on (default sqlite:profilesim.db);\n"
    "                     postgres://USER@HOST:PORT/DB works too; memory: cannot be\n"
    "                     shared by processes and is refused. faulty:OPTIONS:URL makes\n"
    "                     the servers suffer injected faults; the checker reads URL\n"
    "                     directly\n"
    "  --store-name NAME  profile store name inside the store (default Players)\n"
    "  --servers N        game-server processes (default 4, max 64)\n"
    "  --players N        player population (default 500)\n"
    "  --duration S       seconds of play before the servers are stopped (default 30)\n"
    "  --rate N           actions per second per server (default 100)\n"
    "  --seed N           seed for every random choice; server i uses seed+i, so a run\n"
    "                     can be repeated (default: from the clock, printed)\n"
    "  --chaos            SIGKILL random servers at random moments and restart them\n"
    "                     with a new job id\n"
    "  --keep             keep the store's existing profiles (default: the SQLite file\n"
    "                     is deleted, or the store's keys removed, at start)\n"
    "  --journal-dir DIR  where the journals go (default profilesim-journal; emptied at\n"
    "                     start)\n"
    "  --break-fencing    TEST ONLY: server 0 deliberately overwrites a profile it no\n"
    "                     longer owns through the raw backend (a stale owner, as if the\n"
    "                     session fence were missing) and journals it as acknowledged;\n"
    "                     the checker must report violations and exit 1\n"
    "  --quiet            no live progress line\n"
    "  --help             this text\n"
    "\n"
    "Library settings used by every server (short, so much happens in a short run):\n"
    "auto_save_period 2 s, load_repeat_delay 0.25 s, force_load_max_steps 4,\n"
    "assume_dead_session_lock 1800 s, write_cooldown 0.\n"
    "\n"
    "Exit status: 0 no violation; 1 violations (or a server crashed); 2 bad usage or\n"
    "the store could not be opened.\n";

typedef struct slot {
    pid_t pid;
    int restarts;
    double restart_at; /* > 0: dead, to be restarted then */
} slot;

typedef struct run {
    sim_options o;
    sim_board *board;
    slot slots[SIM_MAX_SERVERS];
    uint64_t rng;
    long kills, crashes;
    pid_t watcher;
    int quiet;
    double start;
} run;

static volatile sig_atomic_t g_interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static double rng_unit(run *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* ---- options -------------------------------------------------------------------- */

static int parse_number(const char *flag, const char *text, double lo, double hi,
                        double *out)
{
    char *end = NULL;
    if (!text) {
        fprintf(stderr, "profilesim: %s needs a value (see --help)\n", flag);
        return -1;
    }
    errno = 0;
    double v = text ? strtod(text, &end) : 0;
    if (!text || !*text || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "profilesim: %s needs a number from %g to %g, got \"%s\"\n", flag,
                lo, hi, text ? text : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(run *r, int argc, char **argv)
{
    sim_options *o = &r->o;
    double v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1, rc = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        } else if (strcmp(a, "--store") == 0 && next) {
            o->store_url = next;
        } else if (strcmp(a, "--store-name") == 0 && next) {
            o->store_name = next;
        } else if (strcmp(a, "--journal-dir") == 0 && next) {
            o->journal_dir = next;
        } else if (strcmp(a, "--servers") == 0) {
            rc = parse_number(a, next, 1, SIM_MAX_SERVERS, &v);
            o->servers = (int)v;
        } else if (strcmp(a, "--players") == 0) {
            rc = parse_number(a, next, 1, SIM_MAX_PLAYERS, &v);
            o->players = (int)v;
        } else if (strcmp(a, "--duration") == 0) {
            rc = parse_number(a, next, 0.5, 86400, &o->duration);
        } else if (strcmp(a, "--rate") == 0) {
            rc = parse_number(a, next, 1, 100000, &o->ops_per_second);
        } else if (strcmp(a, "--seed") == 0) {
            rc = parse_number(a, next, 0, 1e15, &v);
            o->seed = (uint64_t)v;
        } else {
            takes = 0;
            if (strcmp(a, "--chaos") == 0)
                o->chaos = 1;
            else if (strcmp(a, "--keep") == 0)
                o->keep = 1;
            else if (strcmp(a, "--break-fencing") == 0)
                o->break_fencing = 1;
            else if (strcmp(a, "--quiet") == 0)
                r->quiet = 1;
            else {
                fprintf(stderr,
                        "profilesim: unknown or incomplete option \"%s\" (see "
                        "--help)\n",
                        a);
                return -1;
            }
        }
        if (rc != 0)
            return -1;
        i += takes;
    }
    if (strncmp(o->store_url, "memory:", 7) == 0) {
        fprintf(stderr, "profilesim: memory: stores live inside one process; use "
                        "sqlite:FILE or postgres://…\n");
        return -1;
    }
    return 0;
}

/* The store URL without a password, for printing. */
static void safe_url(char *out, size_t size, const char *url)
{
    const char *scheme_end = strstr(url, "://"), *at = strchr(url, '@');
    if (scheme_end && at && at > scheme_end) {
        const char *colon = memchr(scheme_end + 3, ':', (size_t)(at - scheme_end - 3));
        if (colon) {
            snprintf(out, size, "%.*s:***%s", (int)(colon - url), url, at);
            url = NULL;
        }
    }
    if (url)
        snprintf(out, size, "%s", url);
    /* ?password=… too: mask every value up to the next '&'. */
    for (char *p = strstr(out, "password="); p; p = strstr(p, "password=")) {
        p += strlen("password=");
        char *end = p + strcspn(p, "&");
        if (end > p) {
            memmove(p + 3, end, strlen(end) + 1);
            memcpy(p, "***", 3);
        }
        p += 3;
    }
}

/* ---- the store at start --------------------------------------------------------- */

static int collect(const char *key, void *ud)
{
    json_t *keys = ud;
    json_array_append_new(keys, json_string(key));
    return 0;
}

/* Opens the store once in the parent (no service, closed before any fork): a store
 * that cannot be opened is a usage error (exit 2) reported once, not by N servers. */
static int create_store(const sim_options *o)
{
    ps_backend *b = NULL;
    if (ps_backend_open(&b, o->store_url) != PS_OK) {
        fprintf(stderr, "profilesim: cannot open the store: %s\n",
                ps_error_last()->message);
        return -1;
    }
    ps_backend_free(b);
    return 0;
}

/* Deletes the SQLite file, or removes the store's keys elsewhere (unless --keep). */
static int reset_store(const sim_options *o)
{
    const char *url = sim_inner_url(o->store_url); /* resetting suffers no faults */
    if (o->keep)
        return create_store(o);
    if (strncmp(url, "sqlite:", 7) == 0) {
        const char *suffix[] = {"", "-wal", "-shm", "-journal"};
        char path[4096];
        for (int i = 0; i < 4; i++) {
            snprintf(path, sizeof path, "%s%s", url + 7, suffix[i]);
            if (unlink(path) != 0 && errno != ENOENT) {
                fprintf(stderr, "profilesim: cannot delete %s: %s\n", path,
                        strerror(errno));
                return -1;
            }
        }
        return create_store(o);
    }
    ps_backend *b = NULL;
    if (ps_backend_open(&b, url) != PS_OK) {
        fprintf(stderr, "profilesim: cannot open the store: %s\n",
                ps_error_last()->message);
        return -1;
    }
    json_t *keys = json_array();
    int rc =
        b->list && b->remove ? b->list(b, o->store_name, NULL, collect, keys) : PS_EINVAL;
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        if (rc == PS_OK)
            rc = b->remove(b, o->store_name, json_string_value(k));
    }
    if (rc != PS_OK && rc != PS_ENOTFOUND)
        fprintf(stderr, "profilesim: cannot clear store \"%s\": %s\n", o->store_name,
                ps_error_last()->message);
    json_decref(keys);
    ps_backend_free(b);
    return rc == PS_OK || rc == PS_ENOTFOUND ? 0 : -1;
}

/* ---- processes ------------------------------------------------------------------ */

static pid_t spawn_watcher(run *r)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/watcher.log", r->o.journal_dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        exit(sim_watcher_main(&r->o, path));
    return pid;
}

static void stop_watcher(run *r)
{
    int status = 0;
    if (r->watcher <= 0)
        return;
    kill(r->watcher, SIGTERM);
    waitpid(r->watcher, &status, 0);
    r->watcher = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "profilesim: the watcher failed (status 0x%x)\n", status);
        r->crashes++;
    }
}

static pid_t spawn(run *r, int index, int restart)
{
    char job[96], path[4096];
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* The child: a fresh job id per process run (ProfileService's JobId). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (index >= 0) {
        snprintf(job, sizeof job, "sim%llu-s%d-r%d-%ld-%lx",
                 (unsigned long long)r->o.seed, index, restart, (long)getpid(),
                 (unsigned long)ts.tv_nsec & 0xffff);
        snprintf(path, sizeof path, "%s/s%02d-r%03d.log", r->o.journal_dir, index,
                 restart);
    } else {
        snprintf(job, sizeof job, "drain-%ld-%lx", (long)getpid(),
                 (unsigned long)ts.tv_nsec & 0xffff);
        snprintf(path, sizeof path, "%s/drain.log", r->o.journal_dir);
    }
    sim_server_args a = {index, restart, job, path};
    exit(sim_server_main(&r->o, r->board, &a));
}

static long stat_sum(const run *r, size_t offset)
{
    long sum = 0;
    for (int i = 0; i <= SIM_MAX_SERVERS; i++)
        sum += atomic_load((atomic_long *)((char *)&r->board->stats[i] + offset));
    return sum;
}

#define STAT(r, field) stat_sum(r, offsetof(sim_stats, field))

static void progress(run *r, double now, long *last_loads, long *last_saves,
                     double *last_t)
{
    long loads = STAT(r, loads), saves = STAT(r, saves);
    double dt = now - *last_t > 0 ? now - *last_t : 1;
    printf("%s%6.1fs  ops %-8ld loads/s %-6.1f saves/s %-6.1f force-loads %-5ld "
           "steals %-5ld gifts %-6ld kills %ld%s",
           isatty(1) ? "\r" : "", now - r->start, STAT(r, ops),
           (double)(loads - *last_loads) / dt, (double)(saves - *last_saves) / dt,
           STAT(r, force_loads), STAT(r, lost), STAT(r, gifts_sent), r->kills,
           isatty(1) ? "  " : "\n");
    fflush(stdout);
    *last_loads = loads;
    *last_saves = saves;
    *last_t = now;
}

/* A child that ended without being killed by us: a crash unless it exited 0. */
static void note_exit(run *r, int index, int status)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    r->crashes++;
    if (WIFSIGNALED(status))
        fprintf(stderr, "\nprofilesim: server %d died of signal %d\n", index,
                WTERMSIG(status));
    else
        fprintf(stderr, "\nprofilesim: server %d exited with status %d\n", index,
                WEXITSTATUS(status));
}

static void reap(run *r, double now)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == r->watcher) {
            fprintf(stderr, "\nprofilesim: the watcher died (status 0x%x)\n", status);
            r->watcher = 0;
            r->crashes++;
        }
        for (int i = 0; i < r->o.servers; i++) {
            if (r->slots[i].pid != pid)
                continue;
            r->slots[i].pid = 0;
            note_exit(r, i, status);
            r->slots[i].restart_at = now + 0.5; /* a crashed server comes back too */
        }
    }
}

static void chaos_step(run *r, double now, double *next_kill)
{
    if (!r->o.chaos || now < *next_kill)
        return;
    *next_kill = now + 0.5 + 2.5 * rng_unit(r);
    int victim = (int)(rng_unit(r) * r->o.servers);
    slot *s = &r->slots[victim];
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    s->restart_at = now + 0.2 + 1.3 * rng_unit(r);
    r->kills++;
}

static void restart_due(run *r, double now)
{
    for (int i = 0; i < r->o.servers; i++) {
        slot *s = &r->slots[i];
        if (s->pid == 0 && s->restart_at > 0 && now >= s->restart_at) {
            s->restart_at = 0;
            s->pid = spawn(r, i, ++s->restarts);
        }
    }
}

/* SIGTERM to every live server; SIGKILL (counted as a crash) after the timeout. */
static void stop_all(run *r)
{
    for (int i = 0; i < r->o.servers; i++)
        if (r->slots[i].pid > 0)
            kill(r->slots[i].pid, SIGTERM);
    double deadline = sim_now() + STOP_TIMEOUT;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < r->o.servers; i++) {
            slot *s = &r->slots[i];
            int status;
            if (s->pid > 0 && waitpid(s->pid, &status, WNOHANG) == s->pid) {
                s->pid = 0;
                note_exit(r, i, status);
            }
            alive += s->pid > 0;
        }
        if (!alive)
            return;
        if (sim_now() > deadline) {
            for (int i = 0; i < r->o.servers; i++)
                if (r->slots[i].pid > 0) {
                    fprintf(stderr, "profilesim: server %d did not stop in %.0f s\n", i,
                            STOP_TIMEOUT);
                    kill(r->slots[i].pid, SIGKILL);
                    waitpid(r->slots[i].pid, NULL, 0);
                    r->slots[i].pid = 0;
                    r->crashes++;
                }
            return;
        }
        usleep(20000);
    }
}

static void play_phase(run *r)
{
    double end = r->start + r->o.duration, next_kill = r->start + 1 + 2 * rng_unit(r);
    double last_print = r->start, last_t = r->start;
    long last_loads = 0, last_saves = 0;
    r->watcher = spawn_watcher(r);
    for (int i = 0; i < r->o.servers; i++)
        r->slots[i].pid = spawn(r, i, 0);
    while (!g_interrupted) {
        double now = sim_now();
        if (now >= end)
            break;
        reap(r, now);
        chaos_step(r, now, &next_kill);
        restart_due(r, now);
        if (!r->quiet && now - last_print >= (isatty(1) ? 0.5 : 5.0)) {
            progress(r, now, &last_loads, &last_saves, &last_t);
            last_print = now;
        }
        usleep(20000);
    }
    stop_all(r);
    if (!r->quiet) {
        progress(r, sim_now(), &last_loads, &last_saves, &last_t);
        if (isatty(1))
            printf("\n");
    }
}

static int run_drain(run *r)
{
    pid_t pid = spawn(r, -1, 0);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "profilesim: the drain server failed (status 0x%x)\n", status);
        r->crashes++;
        return -1;
    }
    return 0;
}

/* ---- report --------------------------------------------------------------------- */

static void report(run *r, const sim_check *before, const sim_check *after, double played)
{
    const sim_totals *t = &after->totals;
    char url[512];
    safe_url(url, sizeof url, r->o.store_url);
    long violations = before->violations + after->violations + r->crashes;
    printf("\nprofilesim report\n");
    printf("  store            %s (profile store \"%s\")\n", url, r->o.store_name);
    printf("  run              %d servers, %d players, %.1f s, seed %llu, chaos %s%s\n",
           r->o.servers, r->o.players, played, (unsigned long long)r->o.seed,
           r->o.chaos ? "on" : "off", r->o.break_fencing ? ", BREAK-FENCING" : "");
    printf("  settings         auto_save_period %g s, load_repeat_delay %g s, "
           "force_load_max_steps %d,\n                   assume_dead_session_lock %g s, "
           "write_cooldown 0, %g actions/s per server\n",
           r->o.auto_save_period, r->o.load_repeat_delay, r->o.force_load_max_steps,
           r->o.assume_dead_session_lock, r->o.ops_per_second);
    printf("  operations       %ld (%.0f/s)\n", STAT(r, ops),
           (double)STAT(r, ops) / played);
    printf("  loads            %ld (%.1f/s), force-loads met a session %ld, sessions "
           "taken from a live server %ld\n",
           t->loads, (double)t->loads / played, t->force_loads, t->lost);
    printf("  saves acked      %ld (%.1f/s); releases acked %ld, unacked %ld\n", t->saves,
           (double)t->saves / played, t->releases, t->unacked_releases);
    printf("  gifts            %ld accepted, %ld applications\n", t->gifts_accepted,
           t->gifts_applied);
    printf("  purchases        %ld confirmed\n", t->purchases);
    printf("  kills            %ld (server processes run: %ld, clean exits %ld)\n",
           r->kills, t->servers_seen, t->clean_exits);
    printf("  issues           %ld (IssueSignal)\n", STAT(r, issues));
    printf(
        "  drain            %ld keys; before it: %ld dead locks of killed servers, %ld "
        "pending global updates\n",
        after->keys, before->dead_locks, before->pending_gifts);
    if (strncmp(r->o.store_url, "faulty:", 7) == 0)
        printf(
            "  faults injected  %ld errors, %ld lost replies, %ld conflicts (faulty:)\n",
            STAT(r, fault_errors), STAT(r, fault_lost_replies), STAT(r, fault_conflicts));
    if (t->stale_writes)
        printf("  stale writes     %ld injected by --break-fencing\n", t->stale_writes);
    printf("  crashes          %ld\n", r->crashes);
    printf("  violations       %ld\n", violations);
    printf("%s\n", violations ? "FAILED: safety violations found" : "OK: no violations");
}

/* The defaults of a run with no arguments (see usage). */
static void default_options(sim_options *o)
{
    *o = (sim_options){.store_url = "sqlite:profilesim.db",
                       .store_name = "Players",
                       .journal_dir = "profilesim-journal",
                       .servers = 4,
                       .players = 500,
                       .duration = 30.0,
                       .ops_per_second = 100.0,
                       .auto_save_period = 2.0,
                       .load_repeat_delay = 0.25,
                       .force_load_max_steps = 4,
                       .assume_dead_session_lock = 1800.0};
    o->seed = ((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16)) % 1000000000ULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long tag = ((unsigned long)ts.tv_sec * 1000003UL) ^
                        (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 20);
    snprintf(o->run_tag, sizeof o->run_tag, "%06lx", tag & 0xffffffUL);
}

/* The shared board, before the first fork. */
static int board_new(run *r, size_t *size)
{
    *size = sizeof(sim_board) + (size_t)r->o.players * sizeof(atomic_int);
    r->board =
        mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r->board == MAP_FAILED) {
        perror("profilesim: mmap");
        return -1;
    }
    r->board->players = r->o.players;
    r->board->servers = r->o.servers;
    return 0;
}

int main(int argc, char **argv)
{
    run r;
    size_t size;
    memset(&r, 0, sizeof r);
    default_options(&r.o);
    if (parse_args(&r, argc, argv) != 0 || reset_store(&r.o) != 0)
        return 2;
    if (sim_journal_reset_dir(r.o.journal_dir) != 0) {
        fprintf(stderr, "profilesim: %s: %s\n", r.o.journal_dir, strerror(errno));
        return 2;
    }
    if (board_new(&r, &size) != 0)
        return 2;
    r.rng = r.o.seed * 31 + 7;
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
    char url[512];
    safe_url(url, sizeof url, r.o.store_url);
    printf("profilesim: %d servers, %d players, %.0f s on %s, seed %llu%s\n", r.o.servers,
           r.o.players, r.o.duration, url, (unsigned long long)r.o.seed,
           r.o.chaos ? ", chaos" : "");
    r.start = sim_now();
    play_phase(&r);
    double played = sim_now() - r.start;
    sim_check before, after;
    printf("checking the store after shutdown…\n");
    int rc = sim_check_run(&before, &r.o, 0);
    if (rc == 0) {
        printf("draining pending global updates and dead locks…\n");
        run_drain(&r);
    }
    stop_watcher(&r);
    printf("checking journals against the final store…\n");
    if (rc != 0 || sim_check_run(&after, &r.o, 1) != 0)
        return 2;
    report(&r, &before, &after, played);
    munmap(r.board, size);
    return before.violations + after.violations + r.crashes ? 1 : 0;
}
