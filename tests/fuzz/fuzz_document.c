/*
 * fuzz_document.c — libFuzzer target for the document codec (src/document.c).
 *
 * For any stored bytes: ps__document_decode never fails but for memory, and what it
 * returns is a document the core can trust. Checked on every input:
 *  - the report is consistent (bad == 0 exactly when what is "");
 *  - the normalised tree has the layout document.h promises, field for field (a
 *    silently accepted invalid layout is a bug);
 *  - unknown fields of an accepted document survive, unchanged;
 *  - encode → decode is a fixed point: same tree, same bytes, and the only problems
 *    the second decode may report are the components that are missing;
 *  - the size limit of encode is exact;
 *  - ps__utf8_name_ok agrees with jansson's UTF-8 validator on the same bytes.
 */
#include "document.h"

#include <profileservice.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_NAME "fuzz_document"
#include "fuzz_common.h"

#define DECODE_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)

static const char *const top_known[] = {
    "Data",         "MetaData", "GlobalUpdates", "RobloxMetaData", "UserIds",
    "WasCorrupted", NULL};
static const char *const meta_known[] = {"ProfileCreateTime",
                                         "SessionLoadCount",
                                         "ActiveSession",
                                         "ForceLoadSession",
                                         "MetaTags",
                                         "LastUpdate",
                                         NULL};

static int is_known(const char *const *names, const char *key)
{
    for (; *names; names++)
        if (strcmp(*names, key) == 0)
            return 1;
    return 0;
}

/* [integer place_id, string job_id without NUL, ...] with the place id an integer. */
static void check_tag(const json_t *tag, const char *name)
{
    const json_t *job = json_array_get(tag, 1);
    CHECK(json_is_array(tag) && json_array_size(tag) >= 2, "%s is not an array of 2+",
          name);
    CHECK(json_is_integer(json_array_get(tag, 0)), "%s[0] is not an integer", name);
    CHECK(json_is_string(job) &&
              strlen(json_string_value(job)) == json_string_length(job),
          "%s[1] is not a NUL-free string", name);
    CHECK(ps__session_tag_get(tag, NULL, NULL), "%s fails ps__session_tag_get", name);
}

static void check_meta(const json_t *meta)
{
    const json_t *v;
    const char *key;

    CHECK(json_is_object(meta), "MetaData is not an object");
    json_object_foreach((json_t *)meta, key, v)
        CHECK(!is_known(meta_known, key) || !json_is_null(v), "MetaData.%s is null", key);
    v = json_object_get(meta, "ProfileCreateTime");
    CHECK(!v || json_is_number(v), "ProfileCreateTime is not a number");
    v = json_object_get(meta, "LastUpdate");
    CHECK(!v || json_is_number(v), "LastUpdate is not a number");
    v = json_object_get(meta, "SessionLoadCount");
    CHECK(!v || (json_is_integer(v) && json_integer_value(v) >= 0),
          "SessionLoadCount is not an integer >= 0");
    if ((v = json_object_get(meta, "ActiveSession")) != NULL)
        check_tag(v, "ActiveSession");
    if ((v = json_object_get(meta, "ForceLoadSession")) != NULL)
        check_tag(v, "ForceLoadSession");
    CHECK(json_is_object(json_object_get(meta, "MetaTags")),
          "MetaData.MetaTags is not an object");
}

static void check_global(const json_t *gu)
{
    const json_t *list = json_array_get(gu, 1);
    json_int_t index, max_id = 0;
    size_t i, j;

    CHECK(json_is_array(gu) && json_array_size(gu) == 2, "GlobalUpdates is not a pair");
    CHECK(json_is_integer(json_array_get(gu, 0)), "GlobalUpdates[0] not an integer");
    index = json_integer_value(json_array_get(gu, 0));
    CHECK(index >= 0, "GlobalUpdates[0] is negative");
    CHECK(json_is_array(list), "GlobalUpdates[1] is not an array");
    for (i = 0; i < json_array_size(list); i++) {
        const json_t *u = json_array_get(list, i);
        json_int_t id;
        CHECK(json_is_array(u) && json_array_size(u) == 4, "update %zu is not a 4-tuple",
              i);
        CHECK(json_is_integer(json_array_get(u, 0)) &&
                  json_integer_value(json_array_get(u, 0)) >= 1,
              "update %zu id", i);
        CHECK(json_is_integer(json_array_get(u, 1)) &&
                  json_integer_value(json_array_get(u, 1)) >= 1,
              "update %zu version", i);
        CHECK(json_is_boolean(json_array_get(u, 2)), "update %zu locked flag", i);
        CHECK(json_array_get(u, 3) != NULL, "update %zu data", i);
        id = json_integer_value(json_array_get(u, 0));
        if (id > max_id)
            max_id = id;
        for (j = 0; j < i; j++)
            CHECK(json_integer_value(json_array_get(json_array_get(list, j), 0)) != id,
                  "update id %lld repeated", (long long)id);
    }
    CHECK(index >= max_id, "index %lld below update id %lld", (long long)index,
          (long long)max_id);
}

static void check_layout(const json_t *doc, const ps_doc_report *r)
{
    const json_t *v, *data, *meta, *gu;
    const char *key;
    size_t i;

    CHECK(json_is_object(doc), "decoded document is not an object");
    json_object_foreach((json_t *)doc, key, v)
        CHECK(!is_known(top_known, key) || !json_is_null(v), "%s is null", key);
    data = json_object_get(doc, "Data");
    meta = json_object_get(doc, "MetaData");
    gu = json_object_get(doc, "GlobalUpdates");
    CHECK(!data || json_is_object(data), "Data is not an object");
    if (meta)
        check_meta(meta);
    if (gu)
        check_global(gu);
    v = json_object_get(doc, "RobloxMetaData");
    CHECK(!v || json_is_object(v) || (json_is_array(v) && json_array_size(v) == 0),
          "RobloxMetaData is neither an object nor []");
    v = json_object_get(doc, "UserIds");
    CHECK(!v || json_is_array(v), "UserIds is not an array");
    for (i = 0; i < json_array_size(v); i++)
        CHECK(json_is_number(json_array_get(v, i)), "UserIds[%zu] is not a number", i);
    v = json_object_get(doc, "WasCorrupted");
    CHECK(!v || json_is_boolean(v), "WasCorrupted is not a boolean");

    switch (r->kind) {
    case PS_DOC_MISSING:
        CHECK(json_object_size(doc) == 0, "a MISSING document is not {}");
        break;
    case PS_DOC_GU_ONLY:
        CHECK(!data && !meta && gu, "a GU_ONLY document has Data/MetaData or lacks GU");
        break;
    case PS_DOC_EXISTING:
        CHECK(data || meta, "an EXISTING document has neither Data nor MetaData");
        /* PS counts a profile as existing only with all three components. */
        CHECK(!!data + !!meta + !!gu == 3 || r->bad != 0,
              "a component is missing yet the document was reported valid");
        break;
    default:
        CHECK(0, "kind %d", (int)r->kind);
    }
}

/* Unknown fields of an accepted document (top level and MetaData) are kept as is. */
static void check_unknown_kept(const json_t *orig, const json_t *doc)
{
    const char *key;
    json_t *v;
    const json_t *om = json_object_get(orig, "MetaData");
    const json_t *dm = json_object_get(doc, "MetaData");

    json_object_foreach((json_t *)orig, key, v) if (!is_known(top_known, key))
        CHECK(json_equal(v, json_object_get(doc, key)), "unknown field %s changed", key);
    if (!json_is_object(om) || !json_is_object(dm))
        return;
    json_object_foreach((json_t *)om, key, v) if (!is_known(meta_known, key))
        CHECK(json_equal(v, json_object_get(dm, key)),
              "unknown MetaData field %s changed", key);
}

static void drop_nulls(json_t *obj, const char *const *known)
{
    for (; *known; known++)
        if (json_is_null(json_object_get(obj, *known)))
            json_object_del(obj, *known);
}

static void empty_array_to_object(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_array(v) && json_array_size(v) == 0)
        json_object_set_new(obj, key, json_object());
}

static void real_to_integer(json_t *array, size_t i)
{
    json_t *v = json_array_get(array, i);
    if (json_is_real(v))
        json_array_set_new(array, i, json_integer((json_int_t)json_real_value(v)));
}

/* What decoding a VALID document must give: the stored tree with only the documented
 * normalisations (document.h) applied. Anything else lost or changed is a bug. */
static json_t *expected_valid(const json_t *orig)
{
    json_t *doc = json_deep_copy(orig), *meta, *gu, *list, *v;
    drop_nulls(doc, top_known);
    empty_array_to_object(doc, "Data");
    empty_array_to_object(doc, "MetaData");
    if ((meta = json_object_get(doc, "MetaData")) != NULL) {
        drop_nulls(meta, meta_known);
        v = json_object_get(meta, "SessionLoadCount");
        if (json_is_real(v))
            json_object_set_new(meta, "SessionLoadCount",
                                json_integer((json_int_t)json_real_value(v)));
        real_to_integer(json_object_get(meta, "ActiveSession"), 0);
        real_to_integer(json_object_get(meta, "ForceLoadSession"), 0);
        empty_array_to_object(meta, "MetaTags");
        if (!json_object_get(meta, "MetaTags"))
            json_object_set_new(meta, "MetaTags", json_object());
    }
    if ((gu = json_object_get(doc, "GlobalUpdates")) != NULL) {
        real_to_integer(gu, 0);
        list = json_array_get(gu, 1);
        for (size_t i = 0; i < json_array_size(list); i++) {
            real_to_integer(json_array_get(list, i), 0);
            real_to_integer(json_array_get(list, i), 1);
        }
    }
    return doc;
}

/* The bits a normalised document must get when decoded again: only "missing". */
static unsigned missing_bits(const json_t *doc, ps_doc_kind kind)
{
    unsigned bits = 0;
    if (kind != PS_DOC_EXISTING)
        return 0;
    if (!json_object_get(doc, "Data"))
        bits |= PS_DOC_BAD_DATA;
    if (!json_object_get(doc, "MetaData"))
        bits |= PS_DOC_BAD_META;
    if (!json_object_get(doc, "GlobalUpdates"))
        bits |= PS_DOC_BAD_GLOBAL;
    return bits;
}

static void check_round_trip(const json_t *doc, const ps_doc_report *r)
{
    char *text = NULL, *again = NULL, *small = NULL;
    size_t len = 0, len2 = 0, small_len = 1;
    json_t *doc2 = NULL;
    ps_doc_report r2;

    CHECK(ps__document_encode(&text, &len, doc, 0) == PS_OK,
          "a decoded document does not encode: %s", ps_error_last()->message);
    CHECK(text && strlen(text) <= len && text[len] == '\0', "encode output");
    /* The limit is exact: len fits, len - 1 does not and returns nothing. */
    CHECK(ps__document_encode(&small, &small_len, doc, len) == PS_OK, "limit len");
    CHECK(small_len == len && memcmp(small, text, len) == 0, "encode is not stable");
    free(small);
    small = (char *)1;
    CHECK(ps__document_encode(&small, &small_len, doc, len - 1) == PS_ETOOBIG,
          "limit len - 1");
    CHECK(small == NULL && small_len == 0, "ETOOBIG returned output");

    CHECK(ps__document_decode(&doc2, &r2, text, len) == PS_OK, "decode again: %s",
          ps_error_last()->message);
    if (r->kind == PS_DOC_MISSING) {
        /* {} again: a MISSING document that is stored is reported as such. */
        CHECK(r2.kind == PS_DOC_MISSING && (r2.bad & PS_DOC_BAD_JSON), "{} again");
    } else {
        CHECK(r2.kind == r->kind, "kind changed %d -> %d", r->kind, r2.kind);
        CHECK(json_equal(doc2, (json_t *)doc), "second decode changed the tree: %s",
              text);
        CHECK(r2.bad == missing_bits(doc, r->kind),
              "normalised document reported bad 0x%x (%s): %s", r2.bad, r2.what, text);
        CHECK(ps__document_encode(&again, &len2, doc2, 0) == PS_OK, "encode again");
        CHECK(len2 == len && memcmp(again, text, len) == 0, "bytes not a fixed point");
    }
    free(again);
    free(text);
    json_decref(doc2);
}

/* ps__utf8_name_ok against jansson's own validator (rejects overlongs, surrogates
 * and code points above U+10FFFF the same way). */
static void check_utf8_names(const uint8_t *data, size_t size)
{
    char buf[80];
    size_t n = size < sizeof buf - 1 ? size : sizeof buf - 1;
    size_t len;
    json_t *s;
    int want, got;

    memcpy(buf, data, n);
    buf[n] = '\0';
    len = strlen(buf);
    s = json_stringn(buf, len);
    want = len >= 1 && len <= 50 && s != NULL;
    got = ps__utf8_name_ok(buf, 50);
    CHECK(want == got, "ps__utf8_name_ok says %d, jansson %d (len %zu)", got, want, len);
    json_decref(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = NULL, *orig;
    ps_doc_report r;
    int rc;

    check_utf8_names(data, size);
    rc = ps__document_decode(&doc, &r, (const char *)data, size);
    CHECK(rc == PS_OK, "decode returned %d: %s", rc, ps_error_last()->message);
    CHECK(doc != NULL, "decode gave no document");
    CHECK((r.bad == 0) == (r.what[0] == '\0'), "bad 0x%x but what \"%s\"", r.bad, r.what);
    CHECK(memchr(r.what, '\0', sizeof r.what) != NULL, "what is not terminated");
    CHECK(r.kind != PS_DOC_MISSING || r.bad != 0, "a stored value decoded as MISSING "
                                                  "without being reported");
    check_layout(doc, &r);
    orig = json_loadb((const char *)data, size, DECODE_FLAGS, NULL);
    if (json_is_object(orig) && r.kind != PS_DOC_MISSING)
        check_unknown_kept(orig, doc);
    if (r.bad == 0) {
        json_t *want = expected_valid(orig);
        CHECK(fuzz_same(want, doc), "a valid document was changed beyond the documented "
                               "normalisations");
        json_decref(want);
    }
    json_decref(orig);
    check_round_trip(doc, &r);
    json_decref(doc);
    return 0;
}
