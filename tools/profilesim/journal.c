/*
 * journal.c — append-only journals: one line per acknowledged operation, written
 * with one write(2) on an O_APPEND descriptor, so a SIGKILL leaves only whole lines.
 */
#include "sim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct sim_journal {
    int fd;
};

double sim_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

sim_journal *sim_journal_open(const char *path)
{
    sim_journal *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (j->fd < 0) {
        free(j);
        return NULL;
    }
    return j;
}

void sim_journal_write(sim_journal *j, const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%.6f ", sim_now());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* One write per line: a partial write only happens on a full disk. */
    while (write(j->fd, line, len) < 0 && errno == EINTR) {
    }
}

void sim_journal_close(sim_journal *j)
{
    if (!j)
        return;
    close(j->fd);
    free(j);
}

const char *sim_inner_url(const char *url)
{
    while (strncmp(url, "faulty:", 7) == 0) {
        const char *colon = strchr(url + 7, ':'); /* OPTIONS never contain ':' */
        if (!colon)
            return url;
        url = colon + 1;
    }
    return url;
}

int sim_journal_reset_dir(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return 0;
}
