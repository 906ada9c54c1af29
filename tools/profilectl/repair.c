/*
 * repair.c — the write commands on one key: gift (through the library, exactly as
 * GlobalUpdateProfileAsync), wipe (backend remove) and unlock (one atomic backend
 * update that removes the session fields and nothing else).
 */
#include "profilectl.h"

#include "document.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* STORE KEY, checked. */
static int check_store_key(ctl *c, const char **pos)
{
    int rc = ctl_check_name(c, "store name", pos[0]);
    return rc == CTL_OK ? ctl_check_name(c, "key", pos[1]) : rc;
}

/* ---- gift ----------------------------------------------------------------------- */

typedef struct gift_ctx {
    ctl *c;
    json_t *data;
    int corrupted;
} gift_ctx;

/* May run more than once (another writer moved the updates on): it only adds. */
static void gift_handler(ps_global_updates *gu, void *userdata)
{
    gift_ctx *g = userdata;
    ps_global_updates_add_active_update(gu, g->data, NULL);
}

static void gift_issue(const char *message, const char *store, const char *key, void *ud)
{
    gift_ctx *g = ud;
    (void)store;
    (void)key;
    ctl_warn(g->c, "%s (retrying; Ctrl-C to give up)", message);
}

static void gift_corruption(const char *store, const char *key, void *ud)
{
    (void)store;
    (void)key;
    ((gift_ctx *)ud)->corrupted = 1;
}

/* The id of the update we added: the written list's highest, as ids only grow and
 * ours was appended last. (The handler's provisional id can be renumbered when
 * another writer added one between the handler's read and our write.) */
static int64_t added_id(ps_global_updates *result)
{
    json_t *active = NULL;
    int64_t id = 0;
    if (ps_global_updates_get_active_updates(&active, result) != PS_OK)
        return 0;
    for (size_t i = 0; i < json_array_size(active); i++) {
        int64_t v = 0;
        if (ps__json_get_int(json_array_get(json_array_get(active, i), 0), &v) && v > id)
            id = v;
    }
    json_decref(active);
    return id;
}

static int gift_run(ctl *c, gift_ctx *g, const char *store_name, const char *key)
{
    ps_config config;
    ps_service *service = NULL;
    ps_profile_store *store = NULL;
    ps_global_updates *result = NULL;
    json_t *template_ = json_object();
    ps_config_init(&config);
    config.backend = c->backend; /* the service takes it, even on failure */
    config.worker_threads = 1;
    c->backend = NULL;
    int rc = CTL_ERROR;
    if (ps_service_new(&service, &config) != PS_OK) {
        rc = ctl_fail_lib(c, "cannot start the library");
        goto done;
    }
    ps_service_issue_signal_connect(NULL, service, gift_issue, g, NULL);
    ps_service_corruption_signal_connect(NULL, service, gift_corruption, g, NULL);
    if (ps_service_get_profile_store(&store, service, store_name, template_) != PS_OK) {
        rc = ctl_fail_lib(c, "profile store");
        goto done;
    }
    if (ps_store_global_update_profile(&result, store, key, gift_handler, g) != PS_OK) {
        rc = ctl_fail_lib(c, "global update");
        goto done;
    }
    if (g->corrupted)
        ctl_warn(c,
                 "the stored document of \"%s\" was corrupt: the gift replaced it "
                 "with its global updates only; the original is in the quarantine "
                 "(profilectl quarantine list %s %s)",
                 key, store_name, key);
    printf("%lld\n", (long long)added_id(result));
    rc = CTL_OK;
done:
    ps_global_updates_free(result);
    ps_service_free(service);
    json_decref(template_);
    return rc;
}

int ctl_gift(ctl *c, int argc, char **argv)
{
    const char *pos[3];
    json_error_t jerr;
    int rc = ctl_parse(c, argc, argv, NULL, pos, 3, "STORE KEY JSON", NULL);
    if (rc == CTL_OK)
        rc = check_store_key(c, pos);
    if (rc != CTL_OK)
        return rc;
    gift_ctx g = {c, json_loads(pos[2], CTL_DECODE_FLAGS, &jerr), 0};
    if (!g.data)
        rc = ctl_usage(c, "JSON is not valid json: %s (byte %d)", jerr.text,
                       jerr.position);
    else if (!json_is_object(g.data) && !json_is_array(g.data))
        rc = ctl_usage(c, "JSON must be an object or an array");
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    if (rc == CTL_OK)
        rc = gift_run(c, &g, pos[0], pos[1]);
    json_decref(g.data);
    return rc;
}

/* ---- wipe ----------------------------------------------------------------------- */

/* Warns when the stored document shows an owner. */
static void warn_if_owned(ctl *c, const ps_bytes *bytes, const char *key)
{
    json_t *doc = NULL;
    ps_doc_report report;
    if (ps__document_decode(&doc, &report, bytes->data, bytes->len) != PS_OK)
        return;
    const json_t *meta = json_object_get(doc, "MetaData");
    const json_t *owner = json_object_get(meta, "ActiveSession");
    const json_t *last = json_object_get(meta, "LastUpdate");
    if (owner) {
        char session[256], age[32] = "never";
        ctl_format_session(session, sizeof session, owner);
        if (json_is_number(last))
            ctl_format_age(age, sizeof age, json_number_value(last), ctl_now());
        ctl_warn(c,
                 "\"%s\" shows an ActiveSession (%s, last update %s): that server "
                 "will fail its next save and lose the profile",
                 key, session, age);
    }
    json_decref(doc);
}

int ctl_wipe(ctl *c, int argc, char **argv)
{
    int yes = 0;
    const char *pos[2];
    const ctl_opt opts[] = {{"--yes", NULL, &yes}, {NULL, NULL, NULL}};
    int rc = ctl_parse(c, argc, argv, opts, pos, 2, "STORE KEY", NULL);
    if (rc == CTL_OK)
        rc = check_store_key(c, pos);
    if (rc == CTL_OK && !yes)
        rc = ctl_usage(c, "refusing to remove \"%s\" from store \"%s\" without --yes",
                       pos[1], pos[0]);
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    if (rc == CTL_OK && !c->backend->remove)
        rc = ctl_fail(c, "store %s cannot remove keys", c->url_shown);
    ps_bytes bytes = {NULL, 0};
    if (rc == CTL_OK)
        rc = ctl_get(c, &bytes, pos[0], pos[1]);
    if (rc != CTL_OK)
        return rc;
    warn_if_owned(c, &bytes, pos[1]);
    ps_bytes_dispose(&bytes);
    int st = c->backend->remove(c->backend, pos[0], pos[1]);
    if (st == PS_ENOTFOUND)
        return ctl_fail(c, "no profile \"%s\" in store \"%s\"", pos[1], pos[0]);
    if (st != PS_OK)
        return ctl_fail_lib(c, "cannot remove");
    printf("removed \"%s\" from store \"%s\"\n", pos[1], pos[0]);
    return CTL_OK;
}

/* ---- unlock --------------------------------------------------------------------- */

typedef struct unlock_ctx {
    double now, dead_after;
    int force;
    int changed; /* out: the write removes a session field */
    int alive;   /* out: the owner looks alive (or cannot tell) */
    char owner[256], requester[256], age[40];
} unlock_ctx;

/* Is the owner of @p meta alive? Like the library's dead-lock rule: dead once its
 * LastUpdate is more than dead_after away from now, on either side (README
 * "Clocks"); no LastUpdate, no way to tell. */
static int owner_alive(unlock_ctx *u, const json_t *meta)
{
    const json_t *last = json_object_get(meta, "LastUpdate");
    snprintf(u->age, sizeof u->age, "unknown (no LastUpdate)");
    if (!json_is_number(last))
        return 1;
    ctl_format_age(u->age, sizeof u->age, json_number_value(last), u->now);
    return !(fabs(u->now - json_number_value(last)) > u->dead_after);
}

/* Removes the session fields from the stored JSON as it is (not the normalised
 * document: a by-hand unlock repairs nothing else). */
static int unlock_transform(ps_write *out, const ps_bytes *current, void *userdata)
{
    unlock_ctx *u = userdata;
    u->changed = u->alive = 0;
    u->owner[0] = u->requester[0] = '\0';
    if (!current)
        return ps_error_set(PS_ENOTFOUND, "the key does not exist");
    json_t *doc = json_loadb(current->data, current->len, CTL_DECODE_FLAGS, NULL);
    json_t *meta = json_object_get(doc, "MetaData");
    json_t *owner = json_object_get(meta, "ActiveSession");
    json_t *requester = json_object_get(meta, "ForceLoadSession");
    int has_owner = owner && !json_is_null(owner);
    int has_requester = requester && !json_is_null(requester);
    int rc = PS_OK;
    if (!json_is_object(meta))
        rc = ps_error_set(PS_ECORRUPT, "%s",
                          doc ? "the document has no MetaData object"
                              : "the stored value is not json");
    if (rc == PS_OK && has_owner) {
        ctl_format_session(u->owner, sizeof u->owner, owner);
        u->alive = owner_alive(u, meta);
        if (u->alive && !u->force)
            rc = ps_error_set(PS_ELOCKED, "the owner looks alive");
    }
    if (rc == PS_OK && has_requester)
        ctl_format_session(u->requester, sizeof u->requester, requester);
    if (rc == PS_OK && (has_owner || has_requester)) {
        json_object_del(meta, "ActiveSession");
        json_object_del(meta, "ForceLoadSession");
        out->doc.data = ctl_dump(doc);
        out->doc.len = out->doc.data ? strlen(out->doc.data) : 0;
        rc = out->doc.data ? PS_OK : ps_error_set(PS_ENOMEM, "out of memory");
        u->changed = rc == PS_OK;
    }
    json_decref(doc);
    return rc;
}

static int unlock_report(ctl *c, const unlock_ctx *u, const char **pos)
{
    if (!u->changed) {
        printf("\"%s\" in store \"%s\" holds no session lock; nothing changed\n", pos[1],
               pos[0]);
        return CTL_OK;
    }
    if (u->owner[0] && u->alive)
        ctl_warn(c,
                 "the owner (%s, last update %s) looked alive: if it is, it loses "
                 "the profile on its next save",
                 u->owner, u->age);
    printf("unlocked \"%s\" in store \"%s\"", pos[1], pos[0]);
    if (u->owner[0])
        printf("; removed ActiveSession (%s)", u->owner);
    if (u->requester[0])
        printf("; removed ForceLoadSession (%s)", u->requester);
    printf("\n");
    return CTL_OK;
}

static int parse_seconds(ctl *c, double *out, const char *text)
{
    char *end = NULL;
    double v = text ? strtod(text, &end) : 0;
    if (!text || end == text || *end || !isfinite(v) || v < 0)
        return ctl_usage(c, "--dead-after wants a number of seconds >= 0, got \"%s\"",
                         text ? text : "");
    *out = v;
    return CTL_OK;
}

int ctl_unlock(ctl *c, int argc, char **argv)
{
    int yes = 0, force = 0;
    const char *pos[2], *dead_after = NULL;
    const ctl_opt opts[] = {{"--yes", NULL, &yes},
                            {"--force", NULL, &force},
                            {"--dead-after", &dead_after, NULL},
                            {NULL, NULL, NULL}};
    unlock_ctx u = {ctl_now(), CTL_DEAD_AFTER, 0, 0, 0, "", "", ""};
    int rc = ctl_parse(c, argc, argv, opts, pos, 2, "STORE KEY", NULL);
    if (rc == CTL_OK)
        rc = check_store_key(c, pos);
    if (rc == CTL_OK && dead_after)
        rc = parse_seconds(c, &u.dead_after, dead_after);
    if (rc == CTL_OK && !yes)
        rc = ctl_usage(c, "refusing to unlock \"%s\" in store \"%s\" without --yes",
                       pos[1], pos[0]);
    if (rc == CTL_OK)
        rc = ctl_open(c, 0);
    if (rc != CTL_OK)
        return rc;
    u.force = force;
    int st = c->backend->update(c->backend, pos[0], pos[1], unlock_transform, &u);
    if (st == PS_ENOTFOUND)
        return ctl_fail(c, "no profile \"%s\" in store \"%s\"", pos[1], pos[0]);
    if (st == PS_ELOCKED)
        return ctl_fail(c,
                        "refusing: the owner of \"%s\" (%s) looks alive: last update "
                        "%s, dead-lock threshold %.0f s. Unlocking would make it lose "
                        "the profile on its next save; use --force to unlock anyway",
                        pos[1], u.owner, u.age, u.dead_after);
    if (st == PS_ECORRUPT)
        return ctl_fail(c, "\"%s\" in store \"%s\" is corrupt: %s", pos[1], pos[0],
                        ps_error_last()->message);
    if (st != PS_OK)
        return ctl_fail_lib(c, "cannot update the store");
    return unlock_report(c, &u, pos);
}
