/*
 * transfer.c — export and import: JSON lines, one per key,
 *
 *   {"store":"PlayerData","key":"Player_2261","value":{...stored document...}}
 *
 * "value" is the document in ProfileService's stored layout, encoded as the library
 * encodes it (compact, sorted keys), so a document the library wrote is exported
 * byte for byte, and export | import | export is the identity. A Roblox DataStore
 * export of ProfileService documents maps onto it: DataStore name → store, entry key
 * → key, the entry's JSON value → value.
 */
#include "profilectl.h"

#include "document.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- export --------------------------------------------------------------------- */

typedef struct key_list {
    char **keys;
    size_t n, cap;
    int oom;
} key_list;

static int collect_key(const char *key, void *userdata)
{
    key_list *l = userdata;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **keys = realloc(l->keys, cap * sizeof *keys);
        if (!keys)
            return l->oom = 1;
        l->keys = keys;
        l->cap = cap;
    }
    if (!(l->keys[l->n] = strdup(key)))
        return l->oom = 1;
    l->n++;
    return 0;
}

static void key_list_dispose(key_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->keys[i]);
    free(l->keys);
}

/* A JSON string literal for @p s. @return malloc'd, or NULL. */
static char *json_quote(const char *s)
{
    json_t *str = json_string(s);
    char *text = str ? ctl_dump(str) : NULL;
    json_decref(str);
    return text;
}

static void print_line(const char *store, const char *key, const char *value)
{
    char *s = json_quote(store), *k = json_quote(key);
    printf("{\"store\":%s,\"key\":%s,\"value\":%s}\n", s ? s : "null", k ? k : "null",
           value);
    free(s);
    free(k);
}

/* One key. A value that is not JSON is skipped (*skipped counts it); a JSON value
 * with invalid profile components is exported with a warning. @return CTL_OK, or
 * CTL_ERROR when the store failed (or, with @p single, the key is absent). */
static int export_key(ctl *c, const char *store, const char *key, int single,
                      int *skipped)
{
    ps_bytes bytes = {NULL, 0};
    int st = c->backend->get(&bytes, c->backend, store, key);
    if (st == PS_ENOTFOUND)
        return single ? ctl_fail(c, "no profile \"%s\" in store \"%s\"", key, store)
                      : CTL_OK; /* removed since the listing */
    if (st != PS_OK)
        return ctl_fail_lib(c, "cannot read the store");
    char *value = NULL, err[200];
    json_t *doc = NULL;
    ps_doc_report report;
    if (ctl_canonical(&value, bytes.data, bytes.len, err, sizeof err) != 0) {
        ctl_fail(c, "skipped \"%s\": the stored value is %s (see profilectl view)", key,
                 err);
        ++*skipped;
    } else {
        if (ps__document_decode(&doc, &report, value, strlen(value)) == PS_OK &&
            report.bad)
            ctl_warn(c,
                     "\"%s\" is corrupt (%s): exported as stored, but import will "
                     "refuse it",
                     key, report.what);
        print_line(store, key, value);
    }
    json_decref(doc);
    free(value);
    ps_bytes_dispose(&bytes);
    return CTL_OK;
}

int ctl_export(ctl *c, int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL};
    int n = 0, skipped = 0;
    int rc = ctl_parse(c, argc, argv, NULL, pos, 1, "STORE KEY", &n);
    if (rc == CTL_OK)
        rc = ctl_check_name(c, "store name", pos[0]);
    if (rc == CTL_OK && n == 2)
        rc = ctl_check_name(c, "key", pos[1]);
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    if (rc != CTL_OK)
        return rc;
    if (n == 2)
        rc = export_key(c, pos[0], pos[1], 1, &skipped);
    else if (!c->backend->list)
        return ctl_fail(c, "store %s cannot list keys", c->url_shown);
    else {
        key_list keys = {NULL, 0, 0, 0};
        if (c->backend->list(c->backend, pos[0], NULL, collect_key, &keys) != PS_OK)
            rc = ctl_fail_lib(c, "cannot list the store");
        else if (keys.oom)
            rc = ctl_fail(c, "out of memory");
        for (size_t i = 0; rc == CTL_OK && i < keys.n; i++)
            rc = export_key(c, pos[0], keys.keys[i], 0, &skipped);
        key_list_dispose(&keys);
    }
    if (rc == CTL_OK && skipped)
        rc = ctl_fail(c, "%d key%s not exported", skipped, skipped == 1 ? "" : "s");
    return rc;
}

/* ---- import --------------------------------------------------------------------- */

/* Keys seen so far (a chained hash), to refuse a key given twice. */
typedef struct seen_key {
    struct seen_key *next;
    long line;
    char key[];
} seen_key;

#define SEEN_BUCKETS 4096

typedef struct import_run {
    ctl *c;
    const char *store;
    int dry_run, replace, any_store;
    long line;
    long written, replaced, unchanged, refused;
    seen_key *seen[SEEN_BUCKETS];
} import_run;

static size_t hash_key(const char *key)
{
    size_t h = 5381;
    for (; *key; key++)
        h = h * 33 + (unsigned char)*key;
    return h % SEEN_BUCKETS;
}

/* @return the line that first gave @p key, or 0 after recording it (-1: no memory). */
static long seen_before(import_run *r, const char *key)
{
    seen_key **head = &r->seen[hash_key(key)];
    for (seen_key *s = *head; s; s = s->next)
        if (strcmp(s->key, key) == 0)
            return s->line;
    seen_key *s = malloc(sizeof *s + strlen(key) + 1);
    if (!s)
        return -1;
    strcpy(s->key, key);
    s->line = r->line;
    s->next = *head;
    *head = s;
    return 0;
}

static void seen_dispose(import_run *r)
{
    for (size_t i = 0; i < SEEN_BUCKETS; i++)
        for (seen_key *s = r->seen[i], *next; s; s = next) {
            next = s->next;
            free(s);
        }
}

/* Reports a refused line ("profilectl: import: line N: ..."). @return CTL_OK. */
static int refuse(import_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int refuse(import_run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "profilectl: import: line %ld: ", r->line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    r->refused++;
    return CTL_OK;
}

/* The line's key, checked. @return the key (borrowed from @p line) or NULL (refused). */
static const char *line_key(import_run *r, const json_t *line)
{
    const json_t *key = json_object_get(line, "key"), *store;
    const char *k = json_string_value(key);
    if (!k)
        return refuse(r, "\"key\" is missing or not a string"), NULL;
    if (strlen(k) != json_string_length(key) || !ps__utf8_name_ok(k, CTL_MAX_NAME))
        return refuse(r, "key \"%s\" is not 1..%d bytes of UTF-8", k, CTL_MAX_NAME), NULL;
    store = json_object_get(line, "store");
    if (store && !json_is_string(store))
        return refuse(r, "\"store\" is not a string"), NULL;
    if (store && strcmp(json_string_value(store), r->store) != 0 && !r->any_store) {
        refuse(r, "store \"%s\" is not \"%s\" (--any-store copies it)",
               json_string_value(store), r->store);
        return NULL;
    }
    return k;
}

/* The line's value as canonical text. @return malloc'd, or NULL (refused). */
static char *line_value(import_run *r, const json_t *line, const char *key)
{
    json_t *value = json_object_get(line, "value"), *parsed = NULL;
    json_error_t jerr;
    ps_doc_report report;
    json_t *doc = NULL;
    if (!value)
        return refuse(r, "key \"%s\": \"value\" is missing", key), NULL;
    if (json_is_string(value)) {
        /* The document as a JSON string, as some DataStore exports give it. */
        parsed = json_loadb(json_string_value(value), json_string_length(value),
                            CTL_DECODE_FLAGS, &jerr);
        if (!parsed)
            return refuse(r, "key \"%s\": the value string is not json: %s", key,
                          jerr.text),
                   NULL;
        value = parsed;
    }
    char *text = ctl_dump(value);
    json_decref(parsed);
    if (!text)
        return refuse(r, "key \"%s\": the value cannot be encoded", key), NULL;
    if (ps__document_decode(&doc, &report, text, strlen(text)) != PS_OK || report.bad) {
        refuse(r, "key \"%s\": not a valid profile document: %s", key,
               doc ? report.what : ps_error_last()->message);
        free(text);
        text = NULL;
    }
    json_decref(doc);
    return text;
}

enum { OUT_NEW, OUT_REPLACED, OUT_UNCHANGED, OUT_EXISTS };

typedef struct import_write {
    const char *doc;
    int replace;
    int outcome;
} import_write;

/* Writes the value as given; the document it replaces goes to the quarantine. */
static int import_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    import_write *w = userdata;
    size_t len = strlen(w->doc);
    w->outcome = current ? OUT_REPLACED : OUT_NEW;
    if (current && current->len == len && memcmp(current->data, w->doc, len) == 0)
        w->outcome = OUT_UNCHANGED;
    else if (current && !w->replace)
        w->outcome = OUT_EXISTS;
    if (w->outcome == OUT_UNCHANGED || w->outcome == OUT_EXISTS)
        return PS_OK; /* nothing written */
    if (current) {
        out->quarantine = 1;
        snprintf(out->reason, sizeof out->reason, "replaced by profilectl import");
    }
    return ps_bytes_set(&out->doc, w->doc, len);
}

/* --dry-run: what the write would do, from a plain read. */
static int dry_outcome(import_run *r, import_write *w, const char *key)
{
    ps_bytes current = {NULL, 0};
    int st = r->c->backend->get(&current, r->c->backend, r->store, key);
    if (st != PS_OK && st != PS_ENOTFOUND)
        return st;
    ps_write ignored;
    memset(&ignored, 0, sizeof ignored);
    import_write probe = {w->doc, w->replace, 0};
    st = import_transform(&ignored, st == PS_OK ? &current : NULL, &probe);
    ps_bytes_dispose(&ignored.doc);
    ps_bytes_dispose(&current);
    w->outcome = probe.outcome;
    return st;
}

static int write_value(import_run *r, const char *key, const char *doc)
{
    import_write w = {doc, r->replace, OUT_NEW};
    ps_backend *b = r->c->backend;
    int st = r->dry_run ? dry_outcome(r, &w, key)
                        : b->update(b, r->store, key, import_transform, &w);
    if (st != PS_OK)
        return ctl_fail(r->c, "line %ld: key \"%s\": %s; stopped here", r->line, key,
                        ps_error_last()->message);
    static const char *const verbs[] = {"write", "replace", "leave unchanged"};
    if (w.outcome == OUT_EXISTS)
        return refuse(r,
                      "key \"%s\" holds a different document in \"%s\" (--replace "
                      "overwrites it and keeps it in the quarantine)",
                      key, r->store);
    if (r->dry_run)
        printf("line %ld: would %s \"%s\"\n", r->line, verbs[w.outcome], key);
    if (w.outcome == OUT_UNCHANGED)
        r->unchanged++;
    else
        r->written++, r->replaced += w.outcome == OUT_REPLACED;
    return CTL_OK;
}

/* One line. @return CTL_OK (written, unchanged or refused), or CTL_ERROR to stop. */
static int import_line(import_run *r, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *line = json_loadb(text, len, CTL_DECODE_FLAGS, &jerr);
    if (!line)
        return refuse(r, "not json: %s (column %d)", jerr.text, jerr.column);
    int rc = CTL_OK;
    const char *key = json_is_object(line) ? line_key(r, line) : NULL;
    char *doc = key ? line_value(r, line, key) : NULL;
    long first = doc ? seen_before(r, key) : 0;
    if (!json_is_object(line))
        refuse(r, "not a json object");
    else if (first < 0)
        rc = ctl_fail(r->c, "out of memory");
    else if (first > 0)
        refuse(r, "key \"%s\" was already given on line %ld", key, first);
    else if (doc)
        rc = write_value(r, key, doc);
    free(doc);
    json_decref(line);
    return rc;
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\r\n", s[i]))
            return 0;
    return 1;
}

static int import_all(import_run *r, FILE *in)
{
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = CTL_OK;
    while (rc == CTL_OK && (len = getline(&buf, &cap, in)) >= 0) {
        r->line++;
        if (!is_blank(buf, (size_t)len))
            rc = import_line(r, buf, (size_t)len);
    }
    if (rc == CTL_OK && ferror(in))
        rc = ctl_fail(r->c, "cannot read stdin");
    free(buf);
    return rc;
}

int ctl_import(ctl *c, int argc, char **argv)
{
    import_run *r = calloc(1, sizeof *r);
    if (!r)
        return ctl_fail(c, "out of memory");
    const char *pos[1];
    const ctl_opt opts[] = {{"--dry-run", NULL, &r->dry_run},
                            {"--replace", NULL, &r->replace},
                            {"--any-store", NULL, &r->any_store},
                            {NULL, NULL, NULL}};
    int rc = ctl_parse(c, argc, argv, opts, pos, 1, "STORE", NULL);
    if (rc == CTL_OK)
        rc = ctl_check_name(c, "store name", pos[0]);
    if (rc == CTL_OK)
        rc = ctl_open(c, !r->dry_run); /* importing may create a new store */
    if (rc == CTL_OK) {
        r->c = c;
        r->store = pos[0];
        if (isatty(STDIN_FILENO))
            ctl_warn(c, "reading JSON lines from the terminal (Ctrl-D ends)");
        rc = import_all(r, stdin);
        printf("%s store \"%s\"%s: %ld %s (%ld replaced), %ld unchanged, %ld refused\n",
               r->dry_run ? "dry run on" : "imported into", r->store,
               r->dry_run ? ", nothing written" : "", r->written,
               r->dry_run ? "to write" : "written", r->replaced, r->unchanged,
               r->refused);
        if (rc == CTL_OK && r->refused)
            rc = CTL_ERROR;
    }
    seen_dispose(r);
    free(r);
    return rc;
}
