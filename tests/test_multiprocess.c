/* test_multiprocess.c — two game-server *processes* on one store, on the real clock
 * with short settings: the not_released handler answers (Repeat, Cancel, ForceLoad),
 * the owner's hand-over on its next auto-save, fencing of the old owner's saves, and
 * a SIGKILLed owner whose dead lock expires. Run as `test_multiprocess URL`. */
#include "support.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

static const char *g_store_name;

static ps_service *real_service(int64_t place, const char *job, double dead_lock)
{
    ps_config config;
    ps_config_init(&config);
    config.store_url = g_url;
    config.place_id = place;
    config.job_id = job;
    config.auto_save_period = 0.5;
    config.load_repeat_delay = 0.1;
    config.force_load_max_steps = 1000; /* success must come from a hand-over */
    config.assume_dead_session_lock = dead_lock;
    ps_service *s = NULL;
    PS_ASSERT_OK(ps_service_new(&s, &config));
    return s;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick_for(ps_service *s, double seconds)
{
    double end = now_seconds() + seconds;
    while (now_seconds() < end) {
        PS_ASSERT_OK(ps_service_update(s));
        usleep(2000);
    }
}

static void wait_child(pid_t pid)
{
    int status = 0;
    PS_ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        PS_FAIL("child %ld failed (status 0x%x)", (long)pid, status);
}

/* ---- owner process A ------------------------------------------------------------------ */

typedef struct owner_state {
    int released;
    int64_t place;
} owner_state;

static void owner_on_release(ps_profile *p, int64_t place, const char *job, void *ud)
{
    owner_state *o = ud;
    (void)p;
    (void)job;
    o->released++;
    o->place = place;
}

/* Holds the key until a force load takes it; then tries to write and must fail. */
static void run_owner(int ready_fd)
{
    ps_service *s = real_service(1000, "proc-A", 3600);
    ps_profile_store *store = test_store(s, g_store_name);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", NULL, NULL));
    owner_state o = {0, 0};
    PS_ASSERT_OK(ps_profile_listen_to_release(NULL, p, owner_on_release, &o, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(1));
    PS_ASSERT_OK(ps_profile_save(p));
    tick_for(s, 0.3);
    PS_ASSERT(write(ready_fd, "r", 1) == 1);
    double end = now_seconds() + 30;
    while (!o.released && now_seconds() < end) {
        PS_ASSERT_OK(ps_service_update(s));
        usleep(2000);
    }
    PS_ASSERT_EQ(o.released, 1);
    PS_ASSERT_EQ(o.place, 2000);
    /* Lost: later edits are refused and never reach the store. */
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(-1));
    PS_ASSERT_STATUS(ps_profile_save(p), PS_ERELEASED);
    tick_for(s, 2);
    ps_profile_free(p);
    ps_service_free(s);
    _exit(0);
}

typedef struct scripted {
    int calls;
    ps_not_released_action answers[8];
} scripted;

static ps_not_released_action answer(int64_t place, const char *job, void *ud)
{
    scripted *h = ud;
    PS_ASSERT_EQ(place, 1000);
    PS_ASSERT_STR_EQ(job, "proc-A");
    return h->answers[h->calls++];
}

static void test_two_processes_with_each_answer(void)
{
    g_store_name = test_store_name("TwoProcesses");
    int fds[2];
    PS_ASSERT(pipe(fds) == 0);
    pid_t owner = fork();
    if (owner == 0)
        run_owner(fds[1]);
    char c;
    PS_ASSERT(read(fds[0], &c, 1) == 1);

    ps_service *b = real_service(2000, "proc-B", 3600);
    ps_profile_store *store = test_store(b, g_store_name);
    ps_profile *p = NULL;
    scripted cancel = {0, {PS_CANCEL}};
    PS_ASSERT_STATUS(ps_store_load_profile(&p, store, "k", answer, &cancel), PS_ECANCELLED);
    PS_ASSERT_EQ(cancel.calls, 1);
    scripted repeat = {0, {PS_REPEAT, PS_REPEAT, PS_REPEAT, PS_CANCEL}};
    PS_ASSERT_STATUS(ps_store_load_profile(&p, store, "k", answer, &repeat), PS_ECANCELLED);
    PS_ASSERT_EQ(repeat.calls, 4); /* kept waiting while A held it */
    scripted force = {0, {PS_FORCE_LOAD}};
    double t0 = now_seconds();
    PS_ASSERT_OK(ps_store_load_profile(&p, store, "k", answer, &force));
    printf("force load took %.2f s (owner auto-save period 0.5 s)\n", now_seconds() - t0);
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(p), "Coins")), 1);
    PS_ASSERT_EQ(ps_profile_session_load_count(p), 2);
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(2));
    PS_ASSERT_OK(ps_profile_save(p));
    tick_for(b, 1); /* A keeps ticking meanwhile: its saves must not land */
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(b);
    wait_child(owner);
    json_t *doc = test_stored_doc(g_url, g_store_name, "k");
    PS_ASSERT_EQ(json_integer_value(json_object_get(json_object_get(doc, "Data"), "Coins")), 2);
    PS_ASSERT(json_object_get(json_object_get(doc, "MetaData"), "ActiveSession") == NULL);
    json_decref(doc);
    close(fds[0]);
    close(fds[1]);
}

/* ---- a killed owner ---------------------------------------------------------------------- */

static void run_doomed_owner(int ready_fd)
{
    ps_service *s = real_service(1000, "proc-A", 3600);
    ps_profile *p = NULL;
    PS_ASSERT_OK(ps_store_load_profile(&p, test_store(s, g_store_name), "k", NULL, NULL));
    json_object_set_new(ps_profile_data(p), "Coins", json_integer(5));
    PS_ASSERT_OK(ps_profile_save(p));
    tick_for(s, 0.3);
    PS_ASSERT(write(ready_fd, "r", 1) == 1);
    for (;;)
        pause(); /* killed here, holding the session */
}

static ps_not_released_action repeat_counting(int64_t place, const char *job, void *ud)
{
    (void)place;
    (void)job;
    (*(int *)ud)++;
    return PS_REPEAT;
}

static void test_killed_owner_lock_expires(void)
{
    g_store_name = test_store_name("KilledOwner");
    int fds[2];
    PS_ASSERT(pipe(fds) == 0);
    pid_t owner = fork();
    if (owner == 0)
        run_doomed_owner(fds[1]);
    char c;
    PS_ASSERT(read(fds[0], &c, 1) == 1);
    PS_ASSERT(kill(owner, SIGKILL) == 0);
    int status;
    PS_ASSERT_EQ(waitpid(owner, &status, 0), owner);

    ps_service *b = real_service(2000, "proc-B", 2.0); /* dead after 2 s */
    ps_profile *p = NULL;
    int calls = 0;
    double t0 = now_seconds();
    PS_ASSERT_OK(ps_store_load_profile(&p, test_store(b, g_store_name), "k",
                                       repeat_counting, &calls));
    double took = now_seconds() - t0;
    printf("dead lock taken after %.2f s, %d handler calls\n", took, calls);
    PS_ASSERT(calls >= 1);
    PS_ASSERT_EQ(json_integer_value(json_object_get(ps_profile_data(p), "Coins")), 5);
    PS_ASSERT_EQ(ps_profile_session_load_count(p), 2);
    PS_ASSERT_OK(ps_profile_release(p));
    ps_profile_free(p);
    ps_service_free(b);
    close(fds[0]);
    close(fds[1]);
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    if (strncmp(g_url, "memory:", 7) == 0) {
        printf("skipped: memory: stores are per process\n");
        return 77;
    }
    PS_RUN(test_two_processes_with_each_answer);
    PS_RUN(test_killed_owner_lock_expires);
    printf("ok\n");
    return 0;
}
