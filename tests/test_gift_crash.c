/* test_gift_crash.c — gifts are applied exactly once across crashes (issue 3).
 *
 * A sender process sends gifts ({"Add":1}) to one key with GlobalUpdateProfileAsync and
 * counts the calls that returned PS_OK. Meanwhile owner processes hold the key and
 * process the gifts the documented way (SEMANTICS.md §7.4): after loading, apply and
 * clear every Locked update and lock every Active one; lock each new Active update;
 * apply each new Locked one to Data and clear it. The parent SIGKILLs the owner at
 * random moments and starts a new one (a new job id), which force-loads the key and
 * steals it from the dead session. When the sender is done, the last owner runs until
 * the store holds no Active or Locked update and shuts down; then the counter must
 * equal the number of successful gift calls, with no gift applied twice.
 *
 * Real clock (processes are killed), short settings. Run as
 * `test_gift_crash URL [SEED [GIFTS]]`; the URL must be a store shared between
 * processes (sqlite:PATH, postgres://...). */
#include "support.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define GIFT_KEY "celebrity"

static const char *g_store_name;
static int g_stats_fd = -1; /* owners report {locked, active} found at load */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A service on the real clock; @p job NULL gives a fresh unique job id. */
static ps_service *real_service(const char *job)
{
    ps_config config;
    ps_config_init(&config);
    config.store_url = g_url;
    config.place_id = 7;
    config.job_id = job;
    config.auto_save_period = 0.2;
    config.load_repeat_delay = 0.05;
    config.force_load_max_steps = 2; /* a dead owner never releases: steal soon */
    config.worker_threads = 2;
    ps_service *s = NULL;
    PS_ASSERT_OK(ps_service_new(&s, &config));
    return s;
}

static ps_profile_store *gift_store(ps_service *s)
{
    json_t *t = json_pack("{s:i, s:[]}", "Counter", 0, "Applied");
    ps_profile_store *store = NULL;
    PS_ASSERT_OK(ps_service_get_profile_store(&store, s, g_store_name, t));
    json_decref(t);
    return store;
}

/* ---- the sender ----------------------------------------------------------------- */

static void add_one(ps_global_updates *gu, void *ud)
{
    (void)ud;
    PS_ASSERT_OK(
        ps_global_updates_add_active_update_new(gu, json_pack("{s:i}", "Add", 1), NULL));
}

/* Sends @p gifts gifts, a random 0-25 ms apart; writes {ok, failed} to @p fd. */
static void run_sender(int fd, int gifts, unsigned seed)
{
    ps_service *s = real_service("gift-sender");
    ps_profile_store *store = gift_store(s);
    int counts[2] = {0, 0};
    for (int i = 0; i < gifts; i++) {
        int rc = ps_store_global_update_profile(NULL, store, GIFT_KEY, add_one, NULL);
        if (rc == PS_OK) {
            counts[0]++;
        } else {
            counts[1]++;
            fprintf(stderr, "sender: gift %d failed: %s %s\n", i, ps_status_name(rc),
                    ps_error_last()->message);
        }
        usleep(rand_r(&seed) % 25000);
    }
    ps_service_free(s);
    PS_ASSERT(write(fd, counts, sizeof counts) == (ssize_t)sizeof counts);
    _exit(0);
}

/* ---- an owner -------------------------------------------------------------------- */

typedef struct owner {
    int index;
    ps_profile *profile;
    int applied, twice;
} owner;

static int has_id(const json_t *ids, json_int_t id)
{
    for (size_t i = 0; i < json_array_size(ids); i++)
        if (json_integer_value(json_array_get(ids, i)) == id)
            return 1;
    return 0;
}

/* Applies a Locked gift to Data and clears it: both reach the store in one write. */
static void apply_gift(owner *o, ps_global_updates *gu, int64_t id, const json_t *data)
{
    json_t *d = ps_profile_data(o->profile);
    json_t *applied = json_object_get(d, "Applied");
    if (has_id(applied, id)) {
        o->twice++;
        fprintf(stderr, "owner %d: gift %lld is applied a second time\n", o->index,
                (long long)id);
    }
    json_int_t counter = json_integer_value(json_object_get(d, "Counter"));
    json_int_t add = json_integer_value(json_object_get(data, "Add"));
    PS_ASSERT_EQ(add, 1);
    json_object_set_new(d, "Counter", json_integer(counter + add));
    json_array_append_new(applied, json_integer(id));
    PS_ASSERT_OK(ps_global_updates_clear_locked_update(gu, id));
    o->applied++;
}

static void on_new_active(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    owner *o = ud;
    (void)data;
    PS_ASSERT_OK(ps_global_updates_lock_active_update(gu, id));
    PS_ASSERT_OK(ps_profile_save(o->profile));
}

static void on_new_locked(ps_global_updates *gu, int64_t id, json_t *data, void *ud)
{
    owner *o = ud;
    apply_gift(o, gu, id, data);
    PS_ASSERT_OK(ps_profile_save(o->profile));
}

/* Right after loading: no listener fires for what the profile already holds. */
static void process_pending(owner *o)
{
    ps_global_updates *gu = ps_profile_global_updates(o->profile);
    json_t *list = NULL;
    int found[2] = {0, 0};
    PS_ASSERT_OK(ps_global_updates_get_locked_updates(&list, gu));
    found[0] = (int)json_array_size(list);
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *pair = json_array_get(list, i);
        apply_gift(o, gu, json_integer_value(json_array_get(pair, 0)),
                   json_array_get(pair, 1));
    }
    json_decref(list);
    PS_ASSERT_OK(ps_global_updates_get_active_updates(&list, gu));
    found[1] = (int)json_array_size(list);
    PS_ASSERT(write(g_stats_fd, found, sizeof found) == (ssize_t)sizeof found);
    for (size_t i = 0; i < json_array_size(list); i++)
        PS_ASSERT_OK(ps_global_updates_lock_active_update(
            gu, json_integer_value(json_array_get(json_array_get(list, i), 0))));
    json_decref(list);
    PS_ASSERT_OK(
        ps_global_updates_listen_to_new_active_update(NULL, gu, on_new_active, o, NULL));
    PS_ASSERT_OK(
        ps_global_updates_listen_to_new_locked_update(NULL, gu, on_new_locked, o, NULL));
    PS_ASSERT_OK(ps_profile_save(o->profile));
}

/* Nonzero once the parent closed the other end of @p fd (the sender is done). */
static int sender_done(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    char c;
    return poll(&pfd, 1, 0) > 0 && read(fd, &c, 1) == 0;
}

/* Nonzero when the stored document holds no Active or Locked update. */
static int store_settled(ps_backend *b)
{
    ps_bytes bytes = {NULL, 0};
    if (b->get(&bytes, b, g_store_name, GIFT_KEY) != PS_OK)
        return 0;
    json_t *doc = json_loadb(bytes.data, bytes.len, 0, NULL);
    ps_bytes_dispose(&bytes);
    json_t *list = json_array_get(json_object_get(doc, "GlobalUpdates"), 1);
    int settled = json_is_array(list) && json_array_size(list) == 0;
    json_decref(doc);
    return settled;
}

static void run_owner(int finish_fd, int index)
{
    ps_service *s = real_service(NULL);
    ps_profile_store *store = gift_store(s);
    owner o = {index, NULL, 0, 0};
    int rc;
    while ((rc = ps_store_load_profile(&o.profile, store, GIFT_KEY, NULL, NULL))) {
        fprintf(stderr, "owner %d: load: %s %s\n", index, ps_status_name(rc),
                ps_error_last()->message);
        usleep(50000);
    }
    process_pending(&o);
    ps_backend *peek = NULL;
    double next_save = now_seconds() + 0.05, next_check = 0;
    for (;;) {
        PS_ASSERT_OK(ps_service_update(s));
        if (!ps_profile_is_active(o.profile))
            PS_FAIL("owner %d lost its session", index);
        double now = now_seconds();
        if (now >= next_save) {
            PS_ASSERT_OK(ps_profile_save(o.profile));
            next_save = now + 0.05;
        }
        if (!peek && sender_done(finish_fd))
            PS_ASSERT_OK(ps_backend_open(&peek, g_url));
        if (peek && now >= next_check) {
            if (store_settled(peek))
                break;
            next_check = now + 0.05;
        }
        usleep(2000);
    }
    PS_ASSERT_OK(ps_profile_release(o.profile));
    PS_ASSERT_OK(ps_service_shutdown(s));
    printf("final owner %d applied %d gifts in its session\n", index, o.applied);
    fflush(stdout);
    ps_profile_free(o.profile);
    ps_service_free(s);
    ps_backend_free(peek);
    _exit(o.twice ? 3 : 0);
}

/* ---- the parent ------------------------------------------------------------------ */

/* A failing parent (abort) takes its children with it. */
static volatile pid_t g_children[2];

static void kill_children(int sig)
{
    for (int i = 0; i < 2; i++)
        if (g_children[i] > 0)
            kill(g_children[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static pid_t start_owner(int finish_fds[2], int index)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    PS_ASSERT(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        close(finish_fds[1]);
        run_owner(finish_fds[0], index);
    }
    g_children[1] = pid;
    return pid;
}

/* Reaps @p pid; fails unless it was killed by SIGKILL or exited 0. */
static void reap(pid_t pid, const char *what)
{
    int status = 0;
    PS_ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        return;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        PS_FAIL("%s %ld failed (status 0x%x)", what, (long)pid, status);
}

/* Sleeps up to @p seconds; returns early (nonzero) when @p sender has exited. */
static int wait_or_sender_exit(pid_t sender, double seconds, int *sender_status)
{
    double end = now_seconds() + seconds;
    while (now_seconds() < end) {
        if (waitpid(sender, sender_status, WNOHANG) == sender)
            return 1;
        usleep(5000);
    }
    return 0;
}

static void check_final_document(int ok, int kills, int owners)
{
    json_t *doc = test_stored_doc(g_url, g_store_name, GIFT_KEY);
    PS_ASSERT(doc != NULL);
    json_t *data = json_object_get(doc, "Data");
    json_t *meta = json_object_get(doc, "MetaData");
    json_t *gu = json_object_get(doc, "GlobalUpdates");
    json_int_t counter = json_integer_value(json_object_get(data, "Counter"));
    json_t *applied = json_object_get(data, "Applied");
    printf("gifts: %d succeeded; kills: %d; owner processes: %d; sessions (load "
           "count): %lld; final counter: %lld; update index: %lld; left in store: %zu\n",
           ok, kills, owners,
           (long long)json_integer_value(json_object_get(meta, "SessionLoadCount")),
           (long long)counter, (long long)json_integer_value(json_array_get(gu, 0)),
           json_array_size(json_array_get(gu, 1)));
    PS_ASSERT_EQ(counter, ok);
    PS_ASSERT_EQ(json_array_size(applied), ok);
    for (size_t i = 0; i < json_array_size(applied); i++)
        for (size_t j = i + 1; j < json_array_size(applied); j++)
            PS_ASSERT(json_integer_value(json_array_get(applied, i)) !=
                      json_integer_value(json_array_get(applied, j)));
    PS_ASSERT_EQ(json_array_size(json_array_get(gu, 1)), 0);
    /* Every id was issued by a call that succeeded: no failed call landed. */
    PS_ASSERT_EQ(json_integer_value(json_array_get(gu, 0)), ok);
    PS_ASSERT(json_object_get(meta, "ActiveSession") == NULL);
    json_decref(doc);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    if (strncmp(g_url, "memory:", 7) == 0) {
        printf("skipped: %s is not shared between processes\n", g_url);
        return 77;
    }
    unsigned seed = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10)
                             : (unsigned)time(NULL) ^ (unsigned)getpid();
    int gifts = argc > 3 ? atoi(argv[3]) : 1000;
    printf("seed %u (rerun: test_gift_crash URL %u %d)\n", seed, seed, gifts);
    g_store_name = test_store_name("GiftCrash");
    double t0 = now_seconds();
    /* Create the store before the processes start together: this test is about gifts,
     * not about opening a fresh file concurrently (test_sqlite_open_race.c). */
    ps_backend *b = NULL;
    PS_ASSERT_OK(ps_backend_open(&b, g_url));
    ps_backend_free(b);

    int result_fds[2], finish_fds[2], stats_fds[2];
    PS_ASSERT(pipe(result_fds) == 0 && pipe(finish_fds) == 0 && pipe(stats_fds) == 0);
    g_stats_fd = stats_fds[1];
    fflush(stdout);
    pid_t sender = fork();
    PS_ASSERT(sender >= 0);
    if (sender == 0) {
        close(result_fds[0]);
        close(finish_fds[0]);
        close(finish_fds[1]);
        run_sender(result_fds[1], gifts, seed);
    }
    close(result_fds[1]);
    g_children[0] = sender;
    signal(SIGABRT, kill_children);

    unsigned r = seed;
    int kills = 0, owners = 1, sender_status = 0;
    pid_t owner_pid = start_owner(finish_fds, owners);
    while (
        !wait_or_sender_exit(sender, 0.1 + (rand_r(&r) % 600) / 1000.0, &sender_status)) {
        kill(owner_pid, SIGKILL);
        reap(owner_pid, "owner");
        kills++;
        owner_pid = start_owner(finish_fds, ++owners);
        if (now_seconds() - t0 > 90)
            PS_FAIL("the sender is still running after 90 s");
    }
    if (!WIFEXITED(sender_status) || WEXITSTATUS(sender_status) != 0)
        PS_FAIL("sender failed (status 0x%x)", sender_status);
    int counts[2] = {0, 0};
    PS_ASSERT(read(result_fds[0], counts, sizeof counts) == (ssize_t)sizeof counts);
    printf("sender: %d gifts sent in %.1f s, %d succeeded, %d failed\n", gifts,
           now_seconds() - t0, counts[0], counts[1]);

    /* The last owner settles the store and shuts down on its own. */
    close(finish_fds[1]);
    int status = 0;
    double deadline = now_seconds() + 40;
    while (waitpid(owner_pid, &status, WNOHANG) != owner_pid) {
        if (now_seconds() > deadline) {
            kill(owner_pid, SIGKILL);
            PS_FAIL("the final owner did not settle the store within 40 s");
        }
        usleep(10000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        PS_FAIL("final owner failed (status 0x%x)", status);
    check_final_document(counts[0], kills, owners);
    /* Gifts a killed owner had locked but not yet applied and cleared, re-offered to
     * the next owner as Locked: the crash window this test is about. */
    close(stats_fds[1]);
    int found[2], locked = 0, active = 0, loads = 0;
    while (read(stats_fds[0], found, sizeof found) == (ssize_t)sizeof found) {
        locked += found[0];
        active += found[1];
        loads++;
    }
    printf("at %d loads the new owner found %d gifts Locked by a dead owner (applied "
           "now) and %d Active\n",
           loads, locked, active);
    printf("ok in %.1f s\n", now_seconds() - t0);
    return 0;
}
