/*
 * quarantine.c — the corrupt originals the library kept aside when it repaired a
 * document (and the documents profilectl's own writes replaced): list, show, restore.
 * A restore keeps the document it replaces in the quarantine too, in the same atomic
 * update, so nothing is ever lost.
 */
#include "profilectl.h"

#include "document.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int quarantine_list(ctl *c, int argc, char **argv);
static int quarantine_show(ctl *c, int argc, char **argv);
static int quarantine_restore(ctl *c, int argc, char **argv);

const ctl_command ctl_quarantine_commands[] = {
    {"quarantine list", "quarantine list [STORE [KEY]]",
     "Lists the quarantined originals (all, or those of STORE, or of KEY in STORE),\n"
     "oldest first, one per line, tab-separated: ID, saved at (UTC), store, key,\n"
     "size in bytes, reason.\n",
     quarantine_list},
    {"quarantine show", "quarantine show ID [--raw]",
     "Shows quarantine entry ID: where it came from, when, why, what the decoder says\n"
     "of it now, and its bytes exactly as they were stored.\n"
     "\n"
     "  --raw  print only the bytes (for a file or a pipe)\n",
     quarantine_show},
    {"quarantine restore", "quarantine restore ID --yes",
     "Writes the bytes of quarantine entry ID back as the value of its key. This\n"
     "replaces the key's current document: in the same atomic update, the current one\n"
     "is kept in the quarantine (a new entry), so it can be restored in turn. A\n"
     "server holding the profile loses it on its next save. A document that is still\n"
     "corrupt will be repaired (and quarantined) again by the next load.\n"
     "\n"
     "  --yes  required: without it nothing happens (exit status 2)\n",
     quarantine_restore},
    {NULL, NULL, NULL, NULL},
};

int ctl_quarantine(ctl *c, int argc, char **argv)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            ctl_print_help(c->cmd);
            return CTL_HELP_SHOWN;
        } else if (strncmp(argv[i], "--store=", 8) == 0) {
            c->url = argv[i] + 8;
        } else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc) {
            c->url = argv[++i];
        } else {
            return ctl_usage(c, "unknown option %s", argv[i]);
        }
    }
    if (i >= argc)
        return ctl_usage(c, "missing SUBCOMMAND (list, show or restore)");
    for (const ctl_command *sub = ctl_quarantine_commands; sub->name; sub++)
        if (strcmp(sub->name + strlen("quarantine "), argv[i]) == 0) {
            c->cmd = sub;
            return sub->run(c, argc - i, argv + i);
        }
    return ctl_usage(c, "unknown subcommand \"%s\" (list, show or restore)", argv[i]);
}

static int check_quarantine(ctl *c)
{
    if (!c->backend->quarantine_list)
        return ctl_fail(c, "store %s keeps no quarantine", c->url_shown);
    return CTL_OK;
}

/* ---- list ----------------------------------------------------------------------- */

static int print_entry(const ps_quarantine_entry *e, void *userdata)
{
    char when[64];
    ++*(int *)userdata;
    ctl_format_time(when, sizeof when, e->saved_at);
    return printf("%" PRId64 "\t%s\t%s\t%s\t%zu\t%s\n", e->id, when, e->store, e->key,
                  e->doc.len, e->reason) < 0;
}

static int quarantine_list(ctl *c, int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL};
    int n = 0, count = 0;
    int rc = ctl_parse(c, argc, argv, NULL, pos, 0, "STORE KEY", &n);
    if (rc == CTL_OK && n >= 1)
        rc = ctl_check_name(c, "store name", pos[0]);
    if (rc == CTL_OK && n == 2)
        rc = ctl_check_name(c, "key", pos[1]);
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    if (rc == CTL_OK)
        rc = check_quarantine(c);
    if (rc != CTL_OK)
        return rc;
    if (c->backend->quarantine_list(c->backend, pos[0], pos[1], print_entry, &count) !=
        PS_OK)
        return ctl_fail_lib(c, "cannot list the quarantine");
    if (count == 0) {
        fflush(stdout);
        fprintf(stderr, "profilectl: quarantine list: no quarantined documents\n");
    }
    return CTL_OK;
}

/* ---- finding one entry ---------------------------------------------------------- */

typedef struct qcopy {
    int64_t id;
    int found;
    char *store, *key, *reason;
    double saved_at;
    ps_bytes doc;
} qcopy;

static int copy_entry(const ps_quarantine_entry *e, void *userdata)
{
    qcopy *q = userdata;
    if (e->id != q->id)
        return 0;
    q->found = (q->store = strdup(e->store)) && (q->key = strdup(e->key)) &&
                       (q->reason = strdup(e->reason)) &&
                       ps_bytes_set(&q->doc, e->doc.data, e->doc.len) == PS_OK
                   ? 1
                   : -1;
    q->saved_at = e->saved_at;
    return 1;
}

static void qcopy_dispose(qcopy *q)
{
    free(q->store);
    free(q->key);
    free(q->reason);
    ps_bytes_dispose(&q->doc);
}

static int parse_id(ctl *c, int64_t *out, const char *text)
{
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || v <= 0 || text[0] == '+' || text[0] == ' ')
        return ctl_usage(c, "ID must be a positive integer, got \"%s\"", text);
    *out = v;
    return CTL_OK;
}

/* Opens the store and copies entry @p id into @p q. */
static int find_entry(ctl *c, qcopy *q, int64_t id)
{
    memset(q, 0, sizeof *q);
    q->id = id;
    int rc = ctl_open(c, 0);
    if (rc == CTL_OK)
        rc = check_quarantine(c);
    if (rc != CTL_OK)
        return rc;
    if (c->backend->quarantine_list(c->backend, NULL, NULL, copy_entry, q) != PS_OK)
        return ctl_fail_lib(c, "cannot list the quarantine");
    if (q->found < 0)
        return ctl_fail(c, "out of memory");
    if (!q->found)
        return ctl_fail(c, "no quarantine entry %" PRId64, id);
    return CTL_OK;
}

/* ---- show ----------------------------------------------------------------------- */

static void print_verdict(const ps_bytes *doc)
{
    json_t *decoded = NULL;
    ps_doc_report report;
    if (ps__document_decode(&decoded, &report, doc->data, doc->len) != PS_OK)
        printf("decodes   ?\n");
    else if (report.bad)
        printf("decodes   corrupt: %s\n", report.what);
    else
        printf("decodes   valid now\n");
    json_decref(decoded);
}

static int quarantine_show(ctl *c, int argc, char **argv)
{
    int raw = 0;
    int64_t id = 0;
    const char *pos[1];
    const ctl_opt opts[] = {{"--raw", NULL, &raw}, {NULL, NULL, NULL}};
    qcopy q;
    memset(&q, 0, sizeof q);
    int rc = ctl_parse(c, argc, argv, opts, pos, 1, "ID", NULL);
    if (rc == CTL_OK)
        rc = parse_id(c, &id, pos[0]);
    if (rc == CTL_OK)
        rc = find_entry(c, &q, id);
    if (rc == CTL_OK && raw) {
        fwrite(q.doc.data, 1, q.doc.len, stdout);
    } else if (rc == CTL_OK) {
        char when[64], age[32];
        ctl_format_time(when, sizeof when, q.saved_at);
        ctl_format_age(age, sizeof age, q.saved_at, ctl_now());
        printf("quarantine entry %" PRId64 "\nstore     %s\nkey       %s\n"
               "saved at  %s (%s)\nreason    %s\nsize      %zu bytes\n",
               id, q.store, q.key, when, age, q.reason, q.doc.len);
        print_verdict(&q.doc);
        printf("--- original bytes ---\n");
        fwrite(q.doc.data, 1, q.doc.len, stdout);
        if (q.doc.len == 0 || q.doc.data[q.doc.len - 1] != '\n')
            printf("\n");
    }
    qcopy_dispose(&q);
    return rc;
}

/* ---- restore -------------------------------------------------------------------- */

typedef struct restore_ctx {
    const ps_bytes *doc;
    char reason[160];
    int had_current, same;
    char owner[256]; /* the current document's ActiveSession, if any */
} restore_ctx;

static int restore_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    restore_ctx *r = userdata;
    r->had_current = current != NULL;
    r->same = current && current->len == r->doc->len &&
              memcmp(current->data, r->doc->data, current->len) == 0;
    r->owner[0] = '\0';
    if (r->same)
        return PS_OK; /* nothing to write */
    json_t *doc = NULL;
    ps_doc_report report;
    if (current &&
        ps__document_decode(&doc, &report, current->data, current->len) == PS_OK) {
        const json_t *owner =
            json_object_get(json_object_get(doc, "MetaData"), "ActiveSession");
        if (owner)
            ctl_format_session(r->owner, sizeof r->owner, owner);
    }
    json_decref(doc);
    out->quarantine = 1;
    snprintf(out->reason, sizeof out->reason, "%s", r->reason);
    return ps_bytes_set(&out->doc, r->doc->data, r->doc->len);
}

/* The newest quarantine entry of the key: the document the restore replaced. */
static int newest_entry(const ps_quarantine_entry *e, void *userdata)
{
    *(int64_t *)userdata = e->id;
    return 0;
}

static int restore_report(ctl *c, const qcopy *q, const restore_ctx *r)
{
    int64_t kept = 0;
    if (r->same) {
        printf("\"%s\" in store \"%s\" already holds quarantine entry %" PRId64
               "; nothing changed\n",
               q->key, q->store, q->id);
        return CTL_OK;
    }
    if (r->owner[0])
        ctl_warn(c,
                 "the replaced document showed an ActiveSession (%s): that server "
                 "loses the profile on its next save",
                 r->owner);
    json_t *doc = NULL;
    ps_doc_report report;
    if (ps__document_decode(&doc, &report, q->doc.data, q->doc.len) == PS_OK &&
        report.bad)
        ctl_warn(c,
                 "the restored document is still corrupt (%s): the next load will "
                 "repair it and quarantine it again",
                 report.what);
    json_decref(doc);
    if (r->had_current &&
        c->backend->quarantine_list(c->backend, q->store, q->key, newest_entry, &kept) ==
            PS_OK &&
        kept > 0)
        ctl_warn(c,
                 "this replaced the current document of \"%s\"; it is kept as "
                 "quarantine entry %" PRId64 " (restore that entry to undo)",
                 q->key, kept);
    printf("restored quarantine entry %" PRId64 " as the value of \"%s\" in store "
           "\"%s\"\n",
           q->id, q->key, q->store);
    return CTL_OK;
}

static int quarantine_restore(ctl *c, int argc, char **argv)
{
    int yes = 0;
    int64_t id = 0;
    const char *pos[1];
    const ctl_opt opts[] = {{"--yes", NULL, &yes}, {NULL, NULL, NULL}};
    qcopy q;
    memset(&q, 0, sizeof q);
    int rc = ctl_parse(c, argc, argv, opts, pos, 1, "ID", NULL);
    if (rc == CTL_OK)
        rc = parse_id(c, &id, pos[0]);
    if (rc == CTL_OK && !yes)
        rc = ctl_usage(c,
                       "refusing to restore entry %s without --yes: it replaces the "
                       "key's current document",
                       pos[0]);
    if (rc == CTL_OK)
        rc = find_entry(c, &q, id);
    if (rc == CTL_OK) {
        restore_ctx r = {&q.doc, "", 0, 0, ""};
        snprintf(r.reason, sizeof r.reason,
                 "replaced by profilectl quarantine restore %" PRId64, id);
        if (c->backend->update(c->backend, q.store, q.key, restore_transform, &r) !=
            PS_OK)
            rc = ctl_fail_lib(c, "cannot update the store");
        else
            rc = restore_report(c, &q, &r);
    }
    qcopy_dispose(&q);
    return rc;
}
