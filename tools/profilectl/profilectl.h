/*
 * profilectl.h — shared by the files of profilectl, the operator's tool: inspect and
 * repair a profile store (list, view, gift, wipe, export/import, quarantine, unlock).
 *
 * Every command parses all its arguments before it opens the store, so a usage error
 * never touches anything; read-only commands only call the backend's get, list and
 * quarantine_list; each write is one atomic backend update (or remove).
 */
#ifndef PROFILECTL_H
#define PROFILECTL_H

#include <profileservice.h>
#include <profileservice/backend.h>

#include <stddef.h>
#include <stdint.h>

/* Exit codes. */
enum { CTL_OK = 0, CTL_ERROR = 1, CTL_USAGE = 2 };

/* A help request is answered, then the command ends with this (→ exit 0). */
#define CTL_HELP_SHOWN (-100)

#define CTL_DEFAULT_STORE "sqlite:profiles.db"
#define CTL_STORE_ENV "PROFILESERVICE_STORE"
#define CTL_MAX_NAME 50       /* store names and keys: 1..50 bytes of UTF-8 */
#define CTL_DEAD_AFTER 1800.0 /* AssumeDeadSessionLock: 30 min */

/* JSON flags: the library's codec reads and writes documents with these. */
#define CTL_DECODE_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)
#define CTL_ENCODE_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

typedef struct ctl_command ctl_command;

/* The run of one command. */
typedef struct ctl {
    const char *url;        /* the store URL (never printed as is: see url_shown) */
    char url_shown[512];    /* the URL with any password masked */
    const ctl_command *cmd; /* the command running, for messages and help */
    ps_backend *backend;    /* opened by ctl_open; freed by main */
} ctl;

/* A command: "quarantine" has subcommands of its own, dispatched by its run. */
struct ctl_command {
    const char *name;     /* "view", "quarantine restore" */
    const char *synopsis; /* "view STORE KEY [--json]" */
    const char *help;     /* what it does, its options, its exit status */
    int (*run)(ctl *c, int argc, char **argv);
};

/* One option of a command. A flag sets *flag = 1; a valued option sets *value. */
typedef struct ctl_opt {
    const char *name; /* "--prefix" */
    const char **value;
    int *flag;
} ctl_opt;

/* ---- main.c: messages, arguments, opening the store ---------------------------- */

/** "profilectl: CMD: MESSAGE" on stderr. @return CTL_ERROR. */
int ctl_fail(ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** As ctl_fail, plus a hint to --help. @return CTL_USAGE. */
int ctl_usage(ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** "profilectl: CMD: warning: MESSAGE" on stderr. */
void ctl_warn(ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** ctl_fail with "WHAT: " and the library's last message (ps_error_last).
 *  @return CTL_ERROR. */
int ctl_fail_lib(ctl *c, const char *what);

/**
 * Parses argv[1..] of a command: its @p opts (ended by a NULL name; NULL for none),
 * the global --store, -h/--help, "--" and "--name=value". Positional arguments go to
 * @p pos: at least @p min, at most the number of words in @p names ("STORE KEY"),
 * which name them in messages; *npos gets the count (may be NULL).
 * @return CTL_OK; CTL_USAGE (message printed); CTL_HELP_SHOWN (help printed).
 */
int ctl_parse(ctl *c, int argc, char **argv, const ctl_opt *opts, const char **pos,
              int min, const char *names, int *npos);

/** Checks a store name or key (@p what says which). @return CTL_OK or CTL_USAGE. */
int ctl_check_name(ctl *c, const char *what, const char *name);

/**
 * Opens the store once (c->backend). A sqlite file must exist unless @p may_create:
 * reading a store never creates one. @return CTL_OK; CTL_USAGE (bad URL); CTL_ERROR.
 */
int ctl_open(ctl *c, int may_create);

/** Prints a command's help on stdout. */
void ctl_print_help(const ctl_command *cmd);

/* ---- common.c: documents, times ------------------------------------------------- */

/**
 * Reads @p key of @p store. @return CTL_OK (out filled; dispose it); CTL_ERROR with
 * the message printed ("no profile \"k\" in store \"S\"" when absent).
 */
int ctl_get(ctl *c, ps_bytes *out, const char *store, const char *key);

/**
 * Re-encodes stored bytes as the library writes documents: compact, sorted keys.
 * @param[out] out malloc'd, NUL-terminated. @param[out] err the parser's message when
 * the bytes are not JSON (may be NULL). @return 0, or -1 (not JSON, or no memory).
 */
int ctl_canonical(char **out, const char *bytes, size_t len, char *err, size_t errlen);

/** The canonical text of @p value (any JSON value). @return malloc'd, or NULL. */
char *ctl_dump(const json_t *value);

/** "2023-11-14 22:13:20 UTC" for Unix seconds @p t. */
void ctl_format_time(char *buf, size_t size, double t);
/** "12 min ago", "3 d ago", "in the future" for @p t against now. */
void ctl_format_age(char *buf, size_t size, double t, double now);
/** The wall clock in Unix seconds. */
double ctl_now(void);

/** A session tag [place_id, job_id, …] as `place 1000, job "job-A"` (or its JSON). */
void ctl_format_session(char *buf, size_t size, const json_t *tag);

/* ---- the commands --------------------------------------------------------------- */

int ctl_list(ctl *c, int argc, char **argv);       /* show.c */
int ctl_view(ctl *c, int argc, char **argv);       /* show.c */
int ctl_gift(ctl *c, int argc, char **argv);       /* repair.c */
int ctl_wipe(ctl *c, int argc, char **argv);       /* repair.c */
int ctl_unlock(ctl *c, int argc, char **argv);     /* repair.c */
int ctl_export(ctl *c, int argc, char **argv);     /* transfer.c */
int ctl_import(ctl *c, int argc, char **argv);     /* transfer.c */
int ctl_quarantine(ctl *c, int argc, char **argv); /* quarantine.c */

extern const ctl_command ctl_quarantine_commands[]; /* quarantine.c; name NULL ends */

#endif /* PROFILECTL_H */
