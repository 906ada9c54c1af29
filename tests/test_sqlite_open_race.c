/* test_sqlite_open_race.c — processes that open one fresh SQLite file at the same
 * moment (game servers starting together, a sender and an owner) must all succeed:
 * BUSY while another process sets up the file is a wait, not a failure. Run as
 * `test_sqlite_open_race sqlite:PATH [ROUNDS]`; PATH is recreated each round. */
#include "support.h"

#include <sys/wait.h>

#define OPENERS 4

static void remove_db(const char *path)
{
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char file[1100];
        snprintf(file, sizeof file, "%s%s", path, suffixes[i]);
        unlink(file);
    }
}

/* One round: OPENERS processes open the fresh file together; returns the failures. */
static int open_together(const char *url)
{
    int go[2];
    PS_ASSERT(pipe(go) == 0);
    pid_t pids[OPENERS];
    fflush(stdout);
    for (int i = 0; i < OPENERS; i++) {
        pids[i] = fork();
        PS_ASSERT(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            close(go[1]);
            (void)!read(go[0], &c,
                        1); /* wait for the start: EOF when the parent closes */
            ps_backend *b = NULL;
            int rc = ps_backend_open(&b, url);
            if (rc != PS_OK)
                fprintf(stderr, "open failed: %s %s\n", ps_status_name(rc),
                        ps_error_last()->message);
            ps_backend_free(b);
            _exit(rc == PS_OK ? 0 : 1);
        }
    }
    close(go[0]);
    close(go[1]); /* all start now */
    int failures = 0;
    for (int i = 0; i < OPENERS; i++) {
        int status = 0;
        PS_ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
        failures += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    return failures;
}

int main(int argc, char **argv)
{
    test_use_url(argc, argv);
    if (strncmp(g_url, "sqlite:", 7) != 0) {
        printf("skipped: needs a sqlite:PATH url\n");
        return 77;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 50, failures = 0;
    for (int r = 0; r < rounds; r++) {
        remove_db(g_url + 7);
        failures += open_together(g_url);
    }
    printf("%d of %d concurrent first opens failed\n", failures, rounds * OPENERS);
    PS_ASSERT_EQ(failures, 0);
    return 0;
}
