/*
 * document.c — the stored profile document (SEMANTICS.md §2): decoding validates and
 * normalises each component so the core can trust types; encoding is canonical
 * (compact, sorted keys), which is how ProfileService's fixtures are stored.
 */
#include "document.h"

#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* DECODE_ANY so a stored string or array is reported as "not an object" rather than
 * as a parse error; ALLOW_NUL because our own encoder writes "\u0000" for strings made
 * with json_stringn, and what we write must always read back. */
#define DECODE_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)
#define ENCODE_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

#if defined(__GNUC__)
#define PS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PS_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------------ */
/* Small helpers                                                                   */

/* Records a corruption: every bit accumulates, but only the first message is kept,
 * since the first problem is the one worth showing. */
static void PS_PRINTF(3, 4) flag(ps_doc_report *r, unsigned bit, const char *fmt, ...)
{
    va_list ap;

    r->bad |= bit;
    if (r->what[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(r->what, sizeof r->what, fmt, ap);
    va_end(ap);
}

/* "MetaData.SessionLoadCount is a string" reads better than a type enum. */
static const char *type_name(const json_t *v)
{
    if (v == NULL)
        return "missing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Roblox writes an empty Lua table as [], so [] may stand where {} was meant. */
static int is_empty_array(const json_t *v)
{
    return json_is_array(v) && json_array_size(v) == 0;
}

/* Lua cannot hold nil in a table, so a stored null means "absent" (SEMANTICS.md §2).
 * Removes a null member. @return the member, or NULL when absent or null. */
static json_t *member(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (json_is_null(v)) {
        json_object_del(obj, key);
        return NULL;
    }
    return v;
}

/* Sets obj[key], stealing @p value (NULL means its allocation failed). */
static int set_new(json_t *obj, const char *key, json_t *value)
{
    if (value == NULL || json_object_set_new(obj, key, value) != 0)
        return ps__error_oom();
    return PS_OK;
}

/* Replaces a number by the same value as an integer, so the core can read integral
 * fields with json_integer_value: Roblox numbers are doubles and may read as reals. */
static int integer_in_array(json_t *array, size_t index, int64_t n)
{
    if (!json_is_real(json_array_get(array, index)))
        return PS_OK;
    if (json_array_set_new(array, index, json_integer(n)) != 0)
        return ps__error_oom();
    return PS_OK;
}

/* Reads an integer >= min (an integral real counts). @return 1 when valid. */
static int get_at_least(const json_t *v, int64_t min, int64_t *out)
{
    return ps__json_get_int(v, out) && *out >= min;
}

/* ------------------------------------------------------------------------------ */
/* Data and MetaData                                                               */

/* Checks that obj[key] is an object ([] becomes {}); otherwise removes it and flags.
 * @return 1 object present, 0 absent or removed, PS_ENOMEM. */
static int want_object(json_t *obj, const char *key, const char *path, unsigned bit,
                       ps_doc_report *r)
{
    json_t *v = member(obj, key);

    if (v == NULL)
        return 0;
    if (json_is_object(v))
        return 1;
    if (is_empty_array(v))
        return set_new(obj, key, json_object()) == PS_OK ? 1 : PS_ENOMEM;
    flag(r, bit, "%s is %s", path, type_name(v));
    json_object_del(obj, key);
    return 0;
}

/* ProfileCreateTime and LastUpdate: any number (os.time() may be read as a real). */
static void check_number(json_t *meta, const char *key, ps_doc_report *r)
{
    json_t *v = member(meta, key);

    if (v == NULL || json_is_number(v))
        return;
    flag(r, PS_DOC_BAD_META, "MetaData.%s is %s", key, type_name(v));
    json_object_del(meta, key);
}

/* SessionLoadCount: an integer >= 0, stored as an integer. */
static int check_count(json_t *meta, ps_doc_report *r)
{
    json_t *v = member(meta, "SessionLoadCount");
    int64_t n;

    if (v == NULL)
        return PS_OK;
    if (get_at_least(v, 0, &n))
        return json_is_real(v) ? set_new(meta, "SessionLoadCount", json_integer(n))
                               : PS_OK;
    if (json_is_number(v))
        flag(r, PS_DOC_BAD_META, "MetaData.SessionLoadCount is %g, not a count",
             json_number_value(v));
    else
        flag(r, PS_DOC_BAD_META, "MetaData.SessionLoadCount is %s", type_name(v));
    json_object_del(meta, "SessionLoadCount");
    return PS_OK;
}

/* ActiveSession / ForceLoadSession: [place_id, job_id, …], the place id stored as an
 * integer so json_equal and the tag helpers agree on 1000 and 1000.0. */
static int check_tag(json_t *meta, const char *key, ps_doc_report *r)
{
    json_t *v = member(meta, key);
    int64_t place_id;

    if (v == NULL)
        return PS_OK;
    if (ps__session_tag_get(v, &place_id, NULL))
        return integer_in_array(v, 0, place_id);
    if (json_is_array(v))
        flag(r, PS_DOC_BAD_META, "MetaData.%s is not [place_id, job_id]", key);
    else
        flag(r, PS_DOC_BAD_META, "MetaData.%s is %s, not [place_id, job_id]", key,
             type_name(v));
    json_object_del(meta, key);
    return PS_OK;
}

/* MetaTags is always an object after decoding: the core writes tags into it. */
static int check_meta_tags(json_t *meta, ps_doc_report *r)
{
    json_t *v = member(meta, "MetaTags");

    if (json_is_object(v))
        return PS_OK;
    if (v != NULL && !is_empty_array(v))
        flag(r, PS_DOC_BAD_META, "MetaData.MetaTags is %s", type_name(v));
    return set_new(meta, "MetaTags", json_object());
}

static int check_meta(json_t *doc, ps_doc_report *r)
{
    json_t *meta;
    int rc = want_object(doc, "MetaData", "MetaData", PS_DOC_BAD_META, r);

    if (rc <= 0)
        return rc;
    meta = json_object_get(doc, "MetaData");
    check_number(meta, "ProfileCreateTime", r);
    rc = check_count(meta, r);
    if (rc == PS_OK)
        rc = check_tag(meta, "ActiveSession", r);
    if (rc == PS_OK)
        rc = check_tag(meta, "ForceLoadSession", r);
    if (rc == PS_OK)
        rc = check_meta_tags(meta, r);
    check_number(meta, "LastUpdate", r);
    return rc;
}

/* ------------------------------------------------------------------------------ */
/* GlobalUpdates: [update_index, [[id, version, locked, data], …]]                 */

/* Why an entry is unusable, or NULL when it is a valid 4-tuple. Normalises its id and
 * version to integers. */
static const char *entry_problem(json_t *entry, int64_t *id, int *oom)
{
    int64_t version;

    if (!json_is_array(entry) || json_array_size(entry) != 4)
        return "is not [id, version, locked, data]";
    if (!get_at_least(json_array_get(entry, 0), 1, id))
        return "has an invalid update id";
    if (!get_at_least(json_array_get(entry, 1), 1, &version))
        return "has an invalid version";
    if (!json_is_boolean(json_array_get(entry, 2)))
        return "has a non-boolean locked flag";
    *oom = integer_in_array(entry, 0, *id) != PS_OK ||
           integer_in_array(entry, 1, version) != PS_OK;
    return NULL;
}

/* Keeps one entry unless it is invalid or repeats an id (the core finds updates by id,
 * so a repeat would be ambiguous). @p seen is a set of ids, as decimal keys. */
static int keep_entry(json_t *kept, json_t *seen, json_t *entry, size_t i,
                      int64_t *max_id, ps_doc_report *r)
{
    char key[24];
    int64_t id = 0;
    int oom = 0;
    const char *why = entry_problem(entry, &id, &oom);

    if (oom)
        return ps__error_oom();
    if (why != NULL) {
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates[1][%zu] %s", i, why);
        return PS_OK;
    }
    snprintf(key, sizeof key, "%lld", (long long)id);
    if (json_object_get(seen, key) != NULL) {
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates[1][%zu] repeats update id %s", i, key);
        return PS_OK;
    }
    if (json_object_set_new(seen, key, json_true()) != 0 ||
        json_array_append(kept, entry) != 0)
        return ps__error_oom();
    if (id > *max_id)
        *max_id = id;
    return PS_OK;
}

/* The valid entries of @p list in a new array. @return PS_OK or PS_ENOMEM. */
static int filter_updates(json_t **out, json_t *list, int64_t *max_id, ps_doc_report *r)
{
    json_t *kept = json_array(), *seen = json_object();
    int rc = (kept && seen) ? PS_OK : ps__error_oom();
    size_t i;

    if (rc == PS_OK && list != NULL && !json_is_array(list))
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates[1] is %s, not a list of updates",
             type_name(list));
    for (i = 0; rc == PS_OK && i < json_array_size(list); i++)
        rc = keep_entry(kept, seen, json_array_get(list, i), i, max_id, r);
    json_decref(seen);
    if (rc != PS_OK)
        json_decref(kept);
    *out = rc == PS_OK ? kept : NULL;
    return rc;
}

/* Reads update_index. A bad one counts as 0 and is raised to the highest kept id
 * below, so an id is never issued twice. */
static int64_t read_index(const json_t *gu, ps_doc_report *r)
{
    const json_t *v = json_array_get(gu, 0);
    int64_t index;

    if (get_at_least(v, 0, &index))
        return index;
    if (json_is_number(v))
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates[0] is %g, not an update index",
             json_number_value(v));
    else if (v != NULL)
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates[0] is %s, not an update index",
             type_name(v));
    return 0;
}

/* New [index, list], stealing @p list on every path (the _new appends drop their
 * value on failure, even into a NULL array). @return NULL on out of memory. */
static json_t *pair_new(int64_t index, json_t *list)
{
    json_t *pair = json_array();
    int failed = json_array_append_new(pair, json_integer(index)) != 0;

    failed |= json_array_append_new(pair, list) != 0;
    if (failed) {
        json_decref(pair);
        return NULL;
    }
    return pair;
}

/* Rebuilds GlobalUpdates as [index, valid entries]; whatever is salvageable of a bad
 * shape is kept. Absent stays absent. */
static int check_global(json_t *doc, ps_doc_report *r)
{
    json_t *gu = member(doc, "GlobalUpdates"), *list = NULL;
    int64_t index, max_id = 0;
    int rc;

    if (gu == NULL)
        return PS_OK;
    if (!json_is_array(gu))
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates is %s, not [update_index, updates]",
             type_name(gu));
    else if (json_array_size(gu) != 2)
        flag(r, PS_DOC_BAD_GLOBAL,
             "GlobalUpdates is an array of %zu, not [update_index, updates]",
             json_array_size(gu));
    index = read_index(gu, r);
    rc = filter_updates(&list, json_array_get(gu, 1), &max_id, r);
    if (rc != PS_OK)
        return rc;
    if (index < max_id) {
        flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates[0] is %lld, below update id %lld",
             (long long)index, (long long)max_id);
        index = max_id;
    }
    return set_new(doc, "GlobalUpdates", pair_new(index, list));
}

/* ------------------------------------------------------------------------------ */
/* RobloxMetaData, UserIds, WasCorrupted                                           */

static void drop_other(json_t *doc, const char *key, const json_t *v, ps_doc_report *r)
{
    flag(r, PS_DOC_BAD_OTHER, "%s is %s", key, type_name(v));
    json_object_del(doc, key);
}

/* UserIds: an array of numbers; one bad element removes the whole list (it is a
 * GDPR list: a partial one would be wrong). */
static void check_user_ids(json_t *doc, ps_doc_report *r)
{
    json_t *v = member(doc, "UserIds");
    size_t i;

    if (v == NULL)
        return;
    if (!json_is_array(v)) {
        drop_other(doc, "UserIds", v, r);
        return;
    }
    for (i = 0; i < json_array_size(v); i++) {
        if (!json_is_number(json_array_get(v, i))) {
            flag(r, PS_DOC_BAD_OTHER, "UserIds[%zu] is %s", i,
                 type_name(json_array_get(v, i)));
            json_object_del(doc, "UserIds");
            return;
        }
    }
}

static void check_other(json_t *doc, ps_doc_report *r)
{
    json_t *v = member(doc, "RobloxMetaData");

    /* [] is kept as is: nothing in the core writes into RobloxMetaData. */
    if (v != NULL && !json_is_object(v) && !is_empty_array(v))
        drop_other(doc, "RobloxMetaData", v, r);
    check_user_ids(doc, r);
    v = member(doc, "WasCorrupted");
    if (v != NULL && !json_is_boolean(v))
        drop_other(doc, "WasCorrupted", v, r);
}

/* ------------------------------------------------------------------------------ */
/* Decode                                                                          */

/* A profile needs all three components (PS's own "existing" test, SEMANTICS.md §3.1);
 * one missing is reported so the core can repair it. A stored value that is no
 * profile at all is corrupt even when no component is bad. */
static void classify(const json_t *doc, int had_data, int had_meta, ps_doc_report *r)
{
    int data = json_object_get(doc, "Data") != NULL;
    int meta = json_object_get(doc, "MetaData") != NULL;
    int global = json_object_get(doc, "GlobalUpdates") != NULL;

    if (data || meta) {
        r->kind = PS_DOC_EXISTING;
        if (!had_data)
            flag(r, PS_DOC_BAD_DATA, "Data is missing");
        if (!had_meta)
            flag(r, PS_DOC_BAD_META, "MetaData is missing");
        if (!global)
            flag(r, PS_DOC_BAD_GLOBAL, "GlobalUpdates is missing");
    } else if (!had_data && !had_meta && global) {
        r->kind = PS_DOC_GU_ONLY;
    } else {
        r->kind = PS_DOC_MISSING;
        if (r->bad == 0)
            flag(r, PS_DOC_BAD_JSON, "document has no Data, MetaData or GlobalUpdates");
    }
}

/* Validates each component in place; see document.h for the rules. */
static int normalise(json_t *doc, ps_doc_report *r)
{
    int had_data = member(doc, "Data") != NULL;
    int had_meta = member(doc, "MetaData") != NULL;
    int rc = want_object(doc, "Data", "Data", PS_DOC_BAD_DATA, r);

    if (rc >= 0)
        rc = check_meta(doc, r);
    if (rc >= 0)
        rc = check_global(doc, r);
    if (rc < 0)
        return rc;
    check_other(doc, r);
    classify(doc, had_data, had_meta, r);
    return PS_OK;
}

/* Parses the root. A bad root is a report, not an error: *root is then NULL. */
static int parse_root(json_t **root, ps_doc_report *r, const char *bytes, size_t len)
{
    json_error_t error;
    json_t *v;

    memset(&error, 0, sizeof error);
    v = json_loadb(bytes, len, DECODE_FLAGS, &error);
    *root = NULL;
    if (v == NULL) {
        /* An empty message means no error was recorded: jansson's load.c returns
         * NULL without one when its lexer buffer cannot be allocated. */
        if (json_error_code(&error) == json_error_out_of_memory || error.text[0] == '\0')
            return ps__error_oom();
        flag(r, PS_DOC_BAD_JSON, "document is not json: %s (byte %d)", error.text,
             error.position);
    } else if (!json_is_object(v)) {
        flag(r, PS_DOC_BAD_JSON, "document is %s, not an object", type_name(v));
        json_decref(v);
    } else {
        *root = v;
    }
    return PS_OK;
}

int ps__document_decode(json_t **out, ps_doc_report *report, const char *bytes,
                        size_t len)
{
    json_t *doc = NULL;
    int rc = PS_OK;

    if (out != NULL)
        *out = NULL;
    if (out == NULL || report == NULL)
        return ps__error_set(PS_EINVAL, "document decode: out or report is NULL");
    memset(report, 0, sizeof *report);
    if (bytes != NULL)
        rc = parse_root(&doc, report, bytes, len);
    if (rc == PS_OK && doc != NULL)
        rc = normalise(doc, report);
    if (rc != PS_OK)
        goto done;
    /* Nothing of a missing document is usable (PS discards even its GlobalUpdates). */
    if (report->kind == PS_DOC_MISSING) {
        json_decref(doc);
        doc = json_object();
        if (doc == NULL)
            rc = ps__error_oom();
    }
done:
    if (rc == PS_OK)
        *out = doc;
    else
        json_decref(doc);
    return rc;
}

/* ------------------------------------------------------------------------------ */
/* Encode                                                                          */

/* Output buffer for json_dump_callback: malloc'd (the caller frees with free(), which
 * json_dumps's buffer would not allow under custom jansson allocators), and stops the
 * encoder as soon as the limit is passed instead of building a huge string. */
typedef struct sink {
    char *buf;
    size_t len, cap, max;
    int too_big, oom;
} sink;

static int sink_put(const char *data, size_t size, void *userdata)
{
    sink *s = userdata;
    char *grown;
    size_t cap;

    if (s->max > 0 && size > s->max - s->len) {
        s->too_big = 1;
        return -1;
    }
    if (size >= s->cap - s->len) {
        cap = s->cap * 2 > s->len + size + 1 ? s->cap * 2 : s->len + size + 1;
        grown = realloc(s->buf, cap);
        if (grown == NULL) {
            s->oom = 1;
            return -1;
        }
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, size);
    s->len += size;
    return 0;
}

int ps__document_encode(char **out, size_t *len, const json_t *doc, size_t max_size)
{
    sink s = {NULL, 0, 0, max_size, 0, 0};
    int rc = PS_OK;

    if (out != NULL)
        *out = NULL;
    if (len != NULL)
        *len = 0;
    if (out == NULL || len == NULL || doc == NULL)
        return ps__error_set(PS_EINVAL, "document encode: out, len or doc is NULL");
    if (!json_is_object(doc))
        return ps__error_set(PS_EINVAL, "document is %s, not an object", type_name(doc));
    if (json_dump_callback(doc, sink_put, &s, ENCODE_FLAGS) != 0 || s.buf == NULL) {
        if (s.too_big)
            rc = ps__error_set(PS_ETOOBIG, "document is over the size limit of %zu bytes",
                               max_size);
        else
            rc = s.oom ? ps__error_oom()
                       : ps__error_set(PS_EINVAL, "document is not encodable as json "
                                                  "(invalid utf-8, a cycle, or out of "
                                                  "memory in jansson)");
        free(s.buf);
        return rc;
    }
    s.buf[s.len] = '\0';
    *out = s.buf;
    *len = s.len;
    return PS_OK;
}

/* ------------------------------------------------------------------------------ */
/* Session tags, integers, names                                                   */

int ps__session_tag_get(const json_t *tag, int64_t *place_id, const char **job_id)
{
    const json_t *job = json_array_get(tag, 1);
    int64_t place;

    /* Extra elements are allowed: ProfileStore writes [place_id, job_id, guid]. A job
     * id with an embedded NUL could not be compared as a C string, so it is invalid. */
    if (!json_is_array(tag) || !ps__json_get_int(json_array_get(tag, 0), &place) ||
        !json_is_string(job) || strlen(json_string_value(job)) != json_string_length(job))
        return 0;
    if (place_id != NULL)
        *place_id = place;
    if (job_id != NULL)
        *job_id = json_string_value(job);
    return 1;
}

int ps__session_tag_is(const json_t *tag, int64_t place_id, const char *job_id)
{
    int64_t place;
    const char *job;

    /* Only the first two elements count, as in ProfileStore (SEMANTICS.md §2). */
    return job_id != NULL && ps__session_tag_get(tag, &place, &job) &&
           place == place_id && strcmp(job, job_id) == 0;
}

json_t *ps__session_tag_new(int64_t place_id, const char *job_id)
{
    if (job_id == NULL)
        return NULL;
    return json_pack("[Is]", (json_int_t)place_id, job_id);
}

int ps__json_get_int(const json_t *value, int64_t *out)
{
    double d;

    if (json_is_integer(value)) {
        if (out != NULL)
            *out = json_integer_value(value);
        return 1;
    }
    if (!json_is_real(value))
        return 0;
    d = json_real_value(value);
    /* -2^63 and 2^63 are exact doubles; the cast is defined only inside the range,
     * and the round trip is exact only for integral values. */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) ||
        (double)(int64_t)d != d)
        return 0;
    if (out != NULL)
        *out = (int64_t)d;
    return 1;
}

/* Length of the well-formed UTF-8 sequence at @p p (Unicode 15, table 3-7), or 0:
 * the narrowed second-byte ranges exclude overlong forms (E0, F0), surrogates (ED)
 * and code points above U+10FFFF (F4); C0, C1 and F5..FF never start a sequence. */
static size_t utf8_sequence(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t n, k;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (k = 2; k < n; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

int ps__utf8_name_ok(const char *s, size_t max_bytes)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len, i, n;

    if (s == NULL || max_bytes == 0)
        return 0;
    /* strnlen bounds the scan: an over-long name is rejected without reading it all. */
    len = strnlen(s, max_bytes < SIZE_MAX ? max_bytes + 1 : max_bytes);
    if (len == 0 || len > max_bytes)
        return 0;
    for (i = 0; i < len; i += n) {
        n = utf8_sequence(p + i, len - i);
        if (n == 0)
            return 0;
    }
    return 1;
}
