/*
 * main.c — profilectl's entry point: the global options, the command table and the
 * help texts, argument parsing, messages and exit codes, and opening the store.
 */
#include "profilectl.h"

#include "document.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char GLOBAL_USAGE[] = "usage: profilectl [--store URL] COMMAND [ARGS...]\n";

static const char GLOBAL_HELP[] =
    "Inspect and repair a profileservice store: the profiles that ProfileStore\n"
    "keeps as JSON documents, their global updates, and the corrupt originals the\n"
    "library kept aside. Reading commands never write. Each write command (gift,\n"
    "wipe, unlock, import, quarantine restore) changes only the key it names, in one\n"
    "atomic update, and the destructive ones want --yes.\n"
    "\n"
    "Commands:\n"
    "  list STORE [--prefix P]        the keys of a profile store\n"
    "  view STORE KEY [--json]        Data, MetaData and global updates of a key\n"
    "  gift STORE KEY JSON            add an Active global update, as\n"
    "                                 GlobalUpdateProfileAsync does\n"
    "  wipe STORE KEY --yes           remove a key\n"
    "  unlock STORE KEY --yes         clear a dead session lock by hand\n"
    "  export STORE [KEY]             JSON lines on stdout, one per key\n"
    "  import STORE                   load JSON lines from stdin\n"
    "  quarantine list [STORE [KEY]]  corrupt originals kept aside by the library\n"
    "  quarantine show ID             one of them, with its bytes\n"
    "  quarantine restore ID --yes    write one back as its key's value\n"
    "  help [COMMAND]                 this text, or a command's\n"
    "\n"
    "Options:\n"
    "  --store URL  sqlite:PATH, postgres://USER[:PASSWORD]@HOST[:PORT]/DB or\n"
    "               memory: (empty, private to this process). Default: the\n"
    "               PROFILESERVICE_STORE environment variable, else sqlite:profiles.db.\n"
    "               Accepted before or after the command. Passwords are never\n"
    "               printed (user:***@).\n"
    "  -h, --help   this help; \"profilectl COMMAND --help\" for a command's.\n"
    "\n"
    "STORE is a profile store name (ProfileService.GetProfileStore) and KEY a\n"
    "profile key, each 1..50 bytes of UTF-8. Use \"--\" before a KEY that starts\n"
    "with \"-\".\n"
    "\n"
    "Exit status: 0 success; 1 operational error (store unreachable, no such key,\n"
    "corrupt or refused input, a write refused for safety); 2 usage error (bad\n"
    "arguments: nothing was read or changed).\n";

static int help_command(ctl *c, int argc, char **argv);

static const ctl_command COMMANDS[] = {
    {"list", "list STORE [--prefix P]",
     "Prints the keys of profile store STORE, one per line, in key order.\n"
     "\n"
     "  --prefix P  only the keys that start with P (bytes, case-sensitive)\n",
     ctl_list},
    {"view", "view STORE KEY [--json]",
     "Shows the profile stored under KEY: Data, MetaData (session owner, load\n"
     "count, times in UTC), RobloxMetaData, UserIds, and the Active and Locked global\n"
     "updates. A document with invalid components is shown as the library would read\n"
     "it, after a line \"corrupt: <what>\". Reads only: a view never writes, never\n"
     "repairs and never takes a session.\n"
     "\n"
     "  --json  print the stored document itself, compact with sorted keys (the\n"
     "          library's encoding); \"corrupt: <what>\" goes to stderr\n"
     "\n"
     "Exit status 1 when the key does not exist, or with --json when the stored\n"
     "value is not JSON at all.\n",
     ctl_view},
    {"gift", "gift STORE KEY JSON",
     "Adds an Active global update holding JSON (an object or an array) to KEY,\n"
     "exactly as ProfileStore:GlobalUpdateProfileAsync with AddActiveUpdate does: one\n"
     "atomic update of the stored document that touches only GlobalUpdates. Works on\n"
     "keys never loaded (the document then holds only GlobalUpdates) and on profiles\n"
     "active on a server (the owner picks the update up on its next save). Prints the\n"
     "new update's id.\n"
     "\n"
     "As in the library, a corrupt stored document is repaired by the gift (the\n"
     "original is kept in the quarantine); a warning says so.\n",
     ctl_gift},
    {"wipe", "wipe STORE KEY --yes",
     "Removes KEY from STORE for good (WipeProfileAsync), e.g. for a data erasure\n"
     "request. No copy is kept. Warns when the profile shows an ActiveSession: the\n"
     "server holding it will fail its next save and lose the session.\n"
     "\n"
     "  --yes  required: without it nothing happens (exit status 2)\n",
     ctl_wipe},
    {"unlock", "unlock STORE KEY --yes [--force] [--dead-after SECONDS]",
     "Removes MetaData.ActiveSession and MetaData.ForceLoadSession from KEY's\n"
     "document in one atomic update, leaving everything else as stored: the next load\n"
     "takes the profile at once. Use it for a lock left by a server that died.\n"
     "A session whose LastUpdate is newer than the dead-lock threshold looks alive:\n"
     "its server may still be saving, and would lose the profile on its next save;\n"
     "then --force is needed. Without a LastUpdate the owner's state is unknown and\n"
     "--force is needed too.\n"
     "\n"
     "  --yes                 required: without it nothing happens (exit status 2)\n"
     "  --force               unlock even when the owner looks alive\n"
     "  --dead-after SECONDS  the threshold (AssumeDeadSessionLock), default 1800\n",
     ctl_unlock},
    {"export", "export STORE [KEY]",
     "Writes the documents of STORE (or only KEY) to stdout as JSON lines, one line\n"
     "per key, in key order:\n"
     "\n"
     "  {\"store\":\"PlayerData\",\"key\":\"Player_2261\",\"value\":{\"Data\":...}}\n"
     "\n"
     "\"value\" is the stored document in ProfileService's layout, encoded as the\n"
     "library stores it (compact, sorted keys, UTF-8). Each line is what a Roblox\n"
     "DataStore export of ProfileService documents maps onto: \"store\" is the\n"
     "DataStore name (the ProfileStore name), \"key\" the entry key and \"value\" the\n"
     "entry's JSON value. export | import | export gives identical bytes.\n"
     "\n"
     "A value that is not JSON at all cannot be exported: it is skipped with a\n"
     "message (see quarantine, view) and the exit status is 1. A JSON value with\n"
     "invalid profile components is exported with a warning; import refuses it.\n",
     ctl_export},
    {"import", "import STORE [--dry-run] [--replace] [--any-store]",
     "Reads JSON lines in export's format from stdin and writes each \"value\" as the\n"
     "document of \"key\" in STORE, unchanged (one atomic backend update per line:\n"
     "no session is taken, nothing is normalised; the bytes are the library's\n"
     "encoding of the value). Blank lines are skipped. Members other than store,\n"
     "key and value are ignored, and \"store\" may be omitted; \"value\" may also be\n"
     "the document as a JSON string (as some DataStore export tools write it).\n"
     "\n"
     "Each value must decode as a valid profile document (Data and MetaData, or\n"
     "only GlobalUpdates, every component well-formed). An invalid line is refused\n"
     "with its line number and nothing is written for it; the other lines are\n"
     "still imported, and the exit status is then 1. A key already holding the same\n"
     "document is left as it is.\n"
     "\n"
     "  --dry-run    check every line and say what would be written; write nothing\n"
     "  --replace    overwrite keys that hold a different document; the replaced\n"
     "               document is kept in the quarantine (nothing is lost).\n"
     "               Without it such lines are refused.\n"
     "  --any-store  write lines whose \"store\" is another store's into STORE\n"
     "               (a copy between stores); without it they are refused\n",
     ctl_import},
    {"quarantine", "quarantine list|show|restore ...",
     "The quarantine keeps the original bytes of every corrupt document the library\n"
     "(or a profilectl write) replaced, with the reason, so nothing is ever lost.\n"
     "\n"
     "  quarantine list [STORE [KEY]]  entries, oldest first\n"
     "  quarantine show ID [--raw]     one entry and its original bytes\n"
     "  quarantine restore ID --yes    write the original back as the key's value\n"
     "\n"
     "\"profilectl quarantine SUBCOMMAND --help\" describes each.\n",
     ctl_quarantine},
    {"help", "help [COMMAND]", "Prints the help of profilectl, or of COMMAND.\n",
     help_command},
    {NULL, NULL, NULL, NULL},
};

/* ---- messages ------------------------------------------------------------------- */

static void vmessage(ctl *c, const char *kind, const char *fmt, va_list ap)
{
    fflush(stdout);
    fputs("profilectl: ", stderr);
    if (c && c->cmd)
        fprintf(stderr, "%s: ", c->cmd->name);
    fputs(kind, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int ctl_fail(ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(c, "", fmt, ap);
    va_end(ap);
    return CTL_ERROR;
}

int ctl_usage(ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(c, "", fmt, ap);
    va_end(ap);
    if (c && c->cmd)
        fprintf(stderr, "usage: profilectl %s\n(profilectl %s --help for more)\n",
                c->cmd->synopsis, c->cmd->name);
    else
        fprintf(stderr, "%s(profilectl --help for more)\n", GLOBAL_USAGE);
    return CTL_USAGE;
}

void ctl_warn(ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(c, "warning: ", fmt, ap);
    va_end(ap);
}

int ctl_fail_lib(ctl *c, const char *what)
{
    return ctl_fail(c, "%s: %s", what, ps_error_last()->message);
}

void ctl_print_help(const ctl_command *cmd)
{
    printf("usage: profilectl [--store URL] %s\n\n%s", cmd->synopsis, cmd->help);
}

/* ---- arguments ------------------------------------------------------------------ */

/* The @p i-th word (0-based) of @p names into @p buf. */
static const char *nth_name(char *buf, size_t size, const char *names, int i)
{
    const char *p = names;
    for (; i > 0 && p; i--)
        p = (p = strchr(p, ' ')) ? p + 1 : NULL;
    if (!p)
        return "ARG";
    snprintf(buf, size, "%.*s", (int)strcspn(p, " "), p);
    return buf;
}

static int count_names(const char *names)
{
    int n = *names ? 1 : 0;
    for (const char *p = names; (p = strchr(p, ' ')) != NULL; p++)
        n++;
    return n;
}

/* One "--name[=value]" argument at argv[*i]; advances *i past a separate value. */
static int parse_option(ctl *c, int argc, char **argv, int *i, const ctl_opt *opts)
{
    const char *arg = argv[*i], *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const char **value = NULL;
    int *flag = NULL;
    if (len == 7 && strncmp(arg, "--store", 7) == 0)
        value = &c->url;
    for (const ctl_opt *o = opts; !value && o && o->name; o++)
        if (strlen(o->name) == len && strncmp(arg, o->name, len) == 0)
            value = o->value, flag = o->flag;
    if (!value && !flag)
        return ctl_usage(c, "unknown option %.*s", (int)len, arg);
    if (flag) {
        if (eq)
            return ctl_usage(c, "option %.*s takes no value", (int)len, arg);
        *flag = 1;
        return CTL_OK;
    }
    if (eq) {
        *value = eq + 1;
    } else if (*i + 1 < argc) {
        *value = argv[++*i];
    } else {
        return ctl_usage(c, "option %s needs a value", arg);
    }
    return CTL_OK;
}

int ctl_parse(ctl *c, int argc, char **argv, const ctl_opt *opts, const char **pos,
              int min, const char *names, int *npos)
{
    int n = 0, max = count_names(names), only_positional = 0;
    char name[32];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = 1;
        } else if (!only_positional &&
                   (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            ctl_print_help(c->cmd);
            return CTL_HELP_SHOWN;
        } else if (!only_positional && strncmp(arg, "--", 2) == 0) {
            int rc = parse_option(c, argc, argv, &i, opts);
            if (rc != CTL_OK)
                return rc;
        } else if (!only_positional && arg[0] == '-' && arg[1]) {
            return ctl_usage(c, "unknown option %s", arg);
        } else if (n >= max) {
            return ctl_usage(c, "unexpected argument \"%s\"", arg);
        } else {
            pos[n++] = arg;
        }
    }
    if (n < min)
        return ctl_usage(c, "missing %s", nth_name(name, sizeof name, names, n));
    if (npos)
        *npos = n;
    return CTL_OK;
}

int ctl_check_name(ctl *c, const char *what, const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return ctl_usage(c, "%s is empty", what);
    if (len > CTL_MAX_NAME)
        return ctl_usage(c, "%s \"%.20s...\" is longer than %d bytes", what, name,
                         CTL_MAX_NAME);
    if (!ps__utf8_name_ok(name, CTL_MAX_NAME))
        return ctl_usage(c, "%s is not valid UTF-8", what);
    return CTL_OK;
}

/* ---- the store ------------------------------------------------------------------ */

/* Appends @p len bytes of @p s to @p out (size @p size, used *n), truncating. */
static void append(char *out, size_t size, size_t *n, const char *s, size_t len)
{
    if (*n + len >= size)
        len = size - 1 - *n;
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

/* Copies @p url with the password of "scheme://user:password@host" and the value of
 * any "password=" parameter replaced by "***". */
static void mask_url(char *out, size_t size, const char *url)
{
    const char *auth = strstr(url, "://"), *at = NULL, *colon = NULL;
    if (auth) {
        auth += 3;
        for (const char *p = auth; *p && !strchr("/?#", *p); p++)
            if (*p == '@')
                at = p;
        colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    }
    size_t n = 0;
    out[0] = '\0';
    const char *p = url;
    if (colon && at > colon + 1) {
        append(out, size, &n, url, (size_t)(colon + 1 - url));
        append(out, size, &n, "***", 3);
        p = at;
    }
    for (const char *hit; (hit = strstr(p, "password=")) != NULL;) {
        append(out, size, &n, p, (size_t)(hit - p) + 9);
        p = hit + 9;
        size_t len = strcspn(p, "&#");
        if (len > 0)
            append(out, size, &n, "***", 3);
        p += len;
    }
    append(out, size, &n, p, strlen(p));
}

int ctl_open(ctl *c, int may_create)
{
    if (c->backend)
        return CTL_OK;
    mask_url(c->url_shown, sizeof c->url_shown, c->url);
    if (strncmp(c->url, "sqlite:", 7) == 0 && c->url[7] && !may_create) {
        struct stat st;
        if (stat(c->url + 7, &st) != 0)
            return ctl_fail(c, "cannot open store %s: %s", c->url_shown,
                            errno == ENOENT ? "no such file (reading never creates a "
                                              "store)"
                                            : strerror(errno));
    }
    if (strncmp(c->url, "memory:", 7) == 0)
        ctl_warn(c, "a memory: store lives inside one process: this one is new and "
                    "empty, and is gone when profilectl exits");
    if (ps_backend_open(&c->backend, c->url) != PS_OK) {
        const ps_error *e = ps_error_last();
        fflush(stdout);
        fprintf(stderr, "profilectl: %s: cannot open store %s: %s\n",
                c->cmd ? c->cmd->name : "open", c->url_shown, e->message);
        c->backend = NULL;
        return e->code == PS_EINVAL ? CTL_USAGE : CTL_ERROR;
    }
    return CTL_OK;
}

/* ---- dispatch ------------------------------------------------------------------- */

static const ctl_command *find_command(const ctl_command *table, const char *name)
{
    for (const ctl_command *cmd = table; cmd->name; cmd++) {
        const char *base = strrchr(cmd->name, ' ');
        if (strcmp(base ? base + 1 : cmd->name, name) == 0)
            return cmd;
    }
    return NULL;
}

static void print_global_help(void)
{
    printf("%s\n%s", GLOBAL_USAGE, GLOBAL_HELP);
}

/* "help", "help COMMAND", "help quarantine SUBCOMMAND". */
static int help_command(ctl *c, int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL};
    int n = 0, rc = ctl_parse(c, argc, argv, NULL, pos, 0, "COMMAND SUBCOMMAND", &n);
    if (rc != CTL_OK)
        return rc == CTL_HELP_SHOWN ? CTL_OK : rc;
    if (n == 0) {
        print_global_help();
        return CTL_OK;
    }
    const ctl_command *cmd = find_command(COMMANDS, pos[0]);
    if (cmd && n == 2 && cmd->run == ctl_quarantine)
        cmd = find_command(ctl_quarantine_commands, pos[1]);
    else if (n == 2)
        cmd = NULL;
    if (!cmd)
        return ctl_usage(c, "no command \"%s%s%s\"", pos[0], n == 2 ? " " : "",
                         n == 2 ? pos[1] : "");
    ctl_print_help(cmd);
    return CTL_OK;
}

/* Global options before the command. @return the index of the command, or -1 with
 * *rc set (help shown or usage error). */
static int parse_global(ctl *c, int argc, char **argv, int *rc)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_global_help();
            *rc = CTL_OK;
            return -1;
        } else if (strncmp(arg, "--store=", 8) == 0) {
            c->url = arg + 8;
        } else if (strcmp(arg, "--store") == 0 && i + 1 < argc) {
            c->url = argv[++i];
        } else if (strcmp(arg, "--store") == 0) {
            *rc = ctl_usage(c, "option --store needs a value");
            return -1;
        } else {
            *rc = ctl_usage(c, "unknown option %s", arg);
            return -1;
        }
    }
    if (i >= argc) {
        *rc = ctl_usage(c, "missing COMMAND");
        return -1;
    }
    return i;
}

int main(int argc, char **argv)
{
    ctl c;
    memset(&c, 0, sizeof c);
    const char *env = getenv(CTL_STORE_ENV);
    c.url = env && *env ? env : CTL_DEFAULT_STORE;
    int rc = CTL_OK;
    int i = parse_global(&c, argc, argv, &rc);
    if (i < 0)
        return rc;
    c.cmd = find_command(COMMANDS, argv[i]);
    if (!c.cmd)
        return ctl_usage(&c, "unknown command \"%s\"", argv[i]);
    rc = c.cmd->run(&c, argc - i, argv + i);
    if (rc == CTL_HELP_SHOWN)
        rc = CTL_OK;
    ps_backend_free(c.backend);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "profilectl: cannot write output: %s\n", strerror(errno));
        rc = CTL_ERROR;
    }
    return rc;
}
