/*
 * show.c — the reading commands: list (the backend's key listing) and view (backend
 * get + the library's decoder; nothing is ever written, nothing repaired).
 */
#include "profilectl.h"

#include "document.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- list ----------------------------------------------------------------------- */

static int print_key(const char *key, void *userdata)
{
    (void)userdata;
    return puts(key) < 0; /* stop when stdout is gone */
}

int ctl_list(ctl *c, int argc, char **argv)
{
    const char *prefix = NULL, *pos[1];
    const ctl_opt opts[] = {{"--prefix", &prefix, NULL}, {NULL, NULL, NULL}};
    int rc = ctl_parse(c, argc, argv, opts, pos, 1, "STORE", NULL);
    if (rc == CTL_OK)
        rc = ctl_check_name(c, "store name", pos[0]);
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    if (rc != CTL_OK)
        return rc;
    if (!c->backend->list)
        return ctl_fail(c, "store %s cannot list keys", c->url_shown);
    if (c->backend->list(c->backend, pos[0], prefix, print_key, NULL) != PS_OK)
        return ctl_fail_lib(c, "cannot list the store");
    return CTL_OK;
}

/* ---- view ----------------------------------------------------------------------- */

#define LABEL_WIDTH 21 /* "  ProfileCreateTime" and a space or two */

/* Prints @p value as indented JSON, each line after @p indent. */
static void print_indented(const json_t *value, const char *indent)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        printf("%s%s\n", indent, line);
        if (!next)
            break;
    }
    free(text);
}

static void print_compact(const char *label, const json_t *value)
{
    char *text = ctl_dump(value);
    printf("%-*s%s\n", LABEL_WIDTH, label, text ? text : "?");
    free(text);
}

static void print_time(const char *label, const json_t *value, double now)
{
    char when[64], age[32];
    if (!json_is_number(value)) {
        print_compact(label, value);
        return;
    }
    ctl_format_time(when, sizeof when, json_number_value(value));
    ctl_format_age(age, sizeof age, json_number_value(value), now);
    printf("%-*s%s (%s; %.17g)\n", LABEL_WIDTH, label, when, age,
           json_number_value(value));
}

static void print_meta_field(const char *name, const json_t *value, double now)
{
    char label[64], session[256];
    snprintf(label, sizeof label, "  %s", name);
    if (strcmp(name, "ProfileCreateTime") == 0 || strcmp(name, "LastUpdate") == 0) {
        print_time(label, value, now);
    } else if (strcmp(name, "ActiveSession") == 0 ||
               strcmp(name, "ForceLoadSession") == 0) {
        ctl_format_session(session, sizeof session, value);
        printf("%-*s%s\n", LABEL_WIDTH, label, session);
    } else {
        print_compact(label, value);
    }
}

/* MetaData: ProfileService's fields in its order, times and sessions readable, then
 * any other field. */
static void print_meta(const json_t *meta, double now)
{
    static const char *const known[] = {"ProfileCreateTime", "SessionLoadCount",
                                        "ActiveSession",     "ForceLoadSession",
                                        "LastUpdate",        "MetaTags"};
    const size_t nknown = sizeof known / sizeof known[0];
    json_t *value;
    if (!meta) {
        printf("%-*snone\n", LABEL_WIDTH, "MetaData");
        return;
    }
    printf("MetaData\n");
    for (size_t i = 0; i < nknown; i++)
        if ((value = json_object_get(meta, known[i])) != NULL)
            print_meta_field(known[i], value, now);
    for (void *it = json_object_iter((json_t *)meta); it;
         it = json_object_iter_next((json_t *)meta, it)) {
        const char *name = json_object_iter_key(it);
        size_t i = 0;
        while (i < nknown && strcmp(name, known[i]) != 0)
            i++;
        if (i == nknown)
            print_meta_field(name, json_object_iter_value(it), now);
    }
}

/* GlobalUpdates (normalised by the decoder): [index, [[id, version, locked, data]]]. */
static void print_global_updates(const json_t *gu)
{
    if (!gu) {
        printf("%-*snone\n", LABEL_WIDTH, "GlobalUpdates");
        return;
    }
    const json_t *list = json_array_get(gu, 1);
    size_t n = json_array_size(list), locked = 0;
    for (size_t i = 0; i < n; i++)
        locked += json_is_true(json_array_get(json_array_get(list, i), 2));
    printf("%-*slast id %" JSON_INTEGER_FORMAT "; %zu active, %zu locked\n", LABEL_WIDTH,
           "GlobalUpdates", json_integer_value(json_array_get(gu, 0)), n - locked,
           locked);
    for (int want_locked = 0; want_locked < 2; want_locked++) {
        for (size_t i = 0; i < n; i++) {
            const json_t *u = json_array_get(list, i);
            if (json_is_true(json_array_get(u, 2)) != want_locked)
                continue;
            char *data = ctl_dump(json_array_get(u, 3));
            printf("  %s #%" JSON_INTEGER_FORMAT " version %" JSON_INTEGER_FORMAT
                   ": %s\n",
                   want_locked ? "locked" : "active",
                   json_integer_value(json_array_get(u, 0)),
                   json_integer_value(json_array_get(u, 1)), data ? data : "?");
            free(data);
        }
    }
}

static void print_state(const json_t *doc, const ps_doc_report *report, size_t len,
                        double now)
{
    const json_t *meta = json_object_get(doc, "MetaData");
    const json_t *owner = json_object_get(meta, "ActiveSession");
    const json_t *last = json_object_get(meta, "LastUpdate");
    char session[256], age[32] = "no LastUpdate";
    if (report->kind == PS_DOC_MISSING) {
        printf("%-*snothing usable in the stored value (%zu bytes); a load would "
               "start a new profile and quarantine it\n",
               LABEL_WIDTH, "state", len);
    } else if (report->kind == PS_DOC_GU_ONLY) {
        printf("%-*sglobal updates only (never loaded)\n", LABEL_WIDTH, "state");
    } else if (owner) {
        ctl_format_session(session, sizeof session, owner);
        if (json_is_number(last))
            ctl_format_age(age, sizeof age, json_number_value(last), now);
        printf("%-*sactive: %s (last update %s)\n", LABEL_WIDTH, "state", session, age);
    } else {
        printf("%-*sreleased\n", LABEL_WIDTH, "state");
    }
}

static void print_profile(const char *store, const char *key, const json_t *doc,
                          const ps_doc_report *report, size_t len)
{
    double now = ctl_now();
    json_t *other = json_object();
    printf("profile \"%s\" in store \"%s\"\n", key, store);
    if (report->bad)
        printf("corrupt: %s\n", report->what);
    print_state(doc, report, len, now);
    if (report->kind == PS_DOC_MISSING) {
        json_decref(other);
        return;
    }
    const json_t *data = json_object_get(doc, "Data");
    printf("%-*s%s\n", data ? 0 : LABEL_WIDTH, "Data", data ? "" : "none");
    if (data)
        print_indented(data, "  ");
    print_meta(json_object_get(doc, "MetaData"), now);
    for (void *it = json_object_iter((json_t *)doc); it;
         it = json_object_iter_next((json_t *)doc, it)) {
        const char *field = json_object_iter_key(it);
        json_t *value = json_object_iter_value(it);
        if (strcmp(field, "RobloxMetaData") == 0 || strcmp(field, "UserIds") == 0 ||
            strcmp(field, "WasCorrupted") == 0)
            print_compact(field, value);
        else if (strcmp(field, "Data") && strcmp(field, "MetaData") &&
                 strcmp(field, "GlobalUpdates") && other)
            json_object_set(other, field, value);
    }
    print_global_updates(json_object_get(doc, "GlobalUpdates"));
    if (json_object_size(other) > 0)
        print_compact("other fields", other);
    json_decref(other);
}

/* --json: the stored bytes, canonical. Only a value that is not JSON fails. */
static int view_json(ctl *c, const char *store, const char *key, const ps_bytes *bytes,
                     const ps_doc_report *report)
{
    char *text = NULL, err[200];
    if (ctl_canonical(&text, bytes->data, bytes->len, err, sizeof err) != 0)
        return ctl_fail(c, "\"%s\" in store \"%s\" is corrupt: %s", key, store, err);
    puts(text);
    free(text);
    if (report->bad) {
        fflush(stdout);
        fprintf(stderr, "profilectl: view: corrupt: %s\n", report->what);
    }
    return CTL_OK;
}

int ctl_view(ctl *c, int argc, char **argv)
{
    int json = 0;
    const char *pos[2];
    const ctl_opt opts[] = {{"--json", NULL, &json}, {NULL, NULL, NULL}};
    int rc = ctl_parse(c, argc, argv, opts, pos, 2, "STORE KEY", NULL);
    if (rc == CTL_OK)
        rc = ctl_check_name(c, "store name", pos[0]);
    if (rc == CTL_OK)
        rc = ctl_check_name(c, "key", pos[1]);
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    ps_bytes bytes = {NULL, 0};
    if (rc == CTL_OK)
        rc = ctl_get(c, &bytes, pos[0], pos[1]);
    if (rc != CTL_OK)
        return rc;
    json_t *doc = NULL;
    ps_doc_report report;
    if (ps__document_decode(&doc, &report, bytes.data, bytes.len) != PS_OK)
        rc = ctl_fail_lib(c, "cannot decode the document");
    else if (json)
        rc = view_json(c, pos[0], pos[1], &bytes, &report);
    else
        print_profile(pos[0], pos[1], doc, &report, bytes.len);
    json_decref(doc);
    ps_bytes_dispose(&bytes);
    return rc;
}
