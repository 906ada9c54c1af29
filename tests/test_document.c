/*
 * test_document.c — the document layer: the stored fixtures round-trip, corrupt
 * documents (tests/data/corrupt/, one case per file) are reported and repaired, and
 * the session-tag, integer and name helpers hold their contracts.
 */
#include "document.h"

#include "error.h"
#include "test.h"

#include <stdint.h>

#define FIXTURES PS_SOURCE_DIR "/tests/data/fixtures/"
#define CORRUPT PS_SOURCE_DIR "/tests/data/corrupt/"

/* ------------------------------------------------------------------------------ */
/* Helpers                                                                         */

/* Reads a whole file; @return malloc'd, NUL-terminated, aborts on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long size;

    if (f == NULL)
        PS_FAIL("cannot open %s", path);
    PS_ASSERT(fseek(f, 0, SEEK_END) == 0);
    size = ftell(f);
    PS_ASSERT(size >= 0);
    rewind(f);
    buf = malloc((size_t)size + 1);
    PS_ASSERT(buf != NULL);
    PS_ASSERT_EQ(fread(buf, 1, (size_t)size, f), size);
    fclose(f);
    buf[size] = '\0';
    *len = (size_t)size;
    return buf;
}

/* Decodes a string that must succeed at the API level. */
static json_t *decode_str(const char *text, ps_doc_report *report)
{
    json_t *doc = NULL;

    PS_ASSERT_OK(ps__document_decode(&doc, report, text, strlen(text)));
    PS_ASSERT(doc != NULL);
    return doc;
}

/* Encodes with no size limit; @return malloc'd. */
static char *encode(const json_t *doc)
{
    char *out = NULL;
    size_t len = 0;

    PS_ASSERT_OK(ps__document_encode(&out, &len, doc, 0));
    PS_ASSERT(out != NULL);
    PS_ASSERT_EQ(strlen(out), len);
    return out;
}

/* decode → encode of a valid document; asserts bad == 0. @return malloc'd. */
static char *round_trip(const char *text)
{
    ps_doc_report report;
    json_t *doc = decode_str(text, &report);
    char *out;

    if (report.bad != 0)
        PS_FAIL("%s: unexpected corruption: %s", text, report.what);
    PS_ASSERT_STR_EQ(report.what, "");
    out = encode(doc);
    json_decref(doc);
    return out;
}

/* The fixtures' only non-canonical bytes: Roblox's `[]` for empty MetaTags, which
 * decoding normalises to {} (document.h). Replaces every occurrence in place. */
static void canonical_meta_tags(char *text)
{
    static const char from[] = "\"MetaTags\":[]";
    char *p = text;

    while ((p = strstr(p, from)) != NULL) {
        p[sizeof from - 3] = '{';
        p[sizeof from - 2] = '}';
        p += sizeof from - 1;
    }
}

static const json_t *meta_get(const json_t *doc, const char *key)
{
    return json_object_get(json_object_get(doc, "MetaData"), key);
}

/* ------------------------------------------------------------------------------ */
/* Fixtures: documents as ProfileService itself stores them                       */

static const struct {
    const char *file;
    ps_doc_kind kind;
    int has_empty_meta_tags; /* stored `"MetaTags":[]` */
} fixtures[] = {
    {"01_loaded_active.json", PS_DOC_EXISTING, 1},
    {"02_saved_active.json", PS_DOC_EXISTING, 0},
    {"03_released.json", PS_DOC_EXISTING, 0},
    {"04_global_updates_only.json", PS_DOC_GU_ONLY, 0},
    {"05_active_and_locked_updates.json", PS_DOC_EXISTING, 1},
    {"06_force_load_pending.json", PS_DOC_EXISTING, 1},
    {"07_after_force_load_taken.json", PS_DOC_EXISTING, 1},
    {"08_repaired_after_corruption.json", PS_DOC_EXISTING, 1},
    {"09_repaired_then_released.json", PS_DOC_EXISTING, 1},
};

/* Every fixture decodes as valid with its kind and re-encodes to the stored bytes
 * (with `"MetaTags":[]` read as {}); a second round trip changes nothing. */
static void test_fixtures_round_trip(void)
{
    char path[512];
    size_t i, len;

    for (i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        ps_doc_report report;
        char *text, *once, *twice;
        json_t *doc;

        snprintf(path, sizeof path, FIXTURES "%s", fixtures[i].file);
        text = read_file(path, &len);
        if (len > 0 && text[len - 1] == '\n')
            text[--len] = '\0';
        PS_ASSERT_OK(ps__document_decode(&doc, &report, text, len));
        if (report.bad != 0)
            PS_FAIL("%s: bad %u: %s", fixtures[i].file, report.bad, report.what);
        PS_ASSERT_EQ(report.kind, fixtures[i].kind);
        once = encode(doc);
        PS_ASSERT_EQ(strstr(text, "\"MetaTags\":[]") != NULL,
                     fixtures[i].has_empty_meta_tags);
        canonical_meta_tags(text);
        PS_ASSERT_STR_EQ(once, text);
        twice = round_trip(once);
        PS_ASSERT_STR_EQ(twice, once);
        free(twice);
        free(once);
        json_decref(doc);
        free(text);
    }
}

/* The fields the core reads come out typed as the core expects. */
static void test_fixture_fields(void)
{
    ps_doc_report report;
    size_t len;
    char *text = read_file(FIXTURES "05_active_and_locked_updates.json", &len);
    json_t *doc, *list;

    PS_ASSERT_OK(ps__document_decode(&doc, &report, text, len));
    PS_ASSERT_EQ(report.bad, 0);
    /* Stored as `"MetaTags":[]` (Roblox's empty table): read as an empty object. */
    PS_ASSERT(json_is_object(meta_get(doc, "MetaTags")));
    PS_ASSERT_EQ(json_object_size(meta_get(doc, "MetaTags")), 0);
    PS_ASSERT(ps__session_tag_is(meta_get(doc, "ActiveSession"), 1000, "job-A"));
    PS_ASSERT_EQ(json_integer_value(meta_get(doc, "SessionLoadCount")), 1);
    /* RobloxMetaData `[]` is kept as is: nothing writes into it. */
    PS_ASSERT(json_is_array(json_object_get(doc, "RobloxMetaData")));
    list = json_array_get(json_object_get(doc, "GlobalUpdates"), 1);
    PS_ASSERT_EQ(json_array_size(list), 2);
    PS_ASSERT(json_is_true(json_array_get(json_array_get(list, 0), 2)));
    PS_ASSERT_EQ(json_integer_value(json_array_get(json_array_get(list, 1), 1)), 2);
    json_decref(doc);
    free(text);
}

/* ------------------------------------------------------------------------------ */
/* Normalisation of valid documents                                                */

/* `[]` is an empty Lua table: Data, MetaData and MetaTags become {}, and a missing
 * MetaTags is created, without any of it counting as corruption. */
static void test_empty_tables(void)
{
    ps_doc_report report;
    json_t *doc = decode_str("{\"Data\":[],\"GlobalUpdates\":[0,[]],\"MetaData\":[]}",
                             &report);
    char *out;

    PS_ASSERT_EQ(report.bad, 0);
    PS_ASSERT_EQ(report.kind, PS_DOC_EXISTING);
    PS_ASSERT(json_is_object(json_object_get(doc, "Data")));
    PS_ASSERT(json_is_object(meta_get(doc, "MetaTags")));
    out = encode(doc);
    PS_ASSERT_STR_EQ(out, "{\"Data\":{},\"GlobalUpdates\":[0,[]],\"MetaData\":"
                          "{\"MetaTags\":{}}}");
    free(out);
    json_decref(doc);
}

/* Every writer keeps fields it does not own (SEMANTICS.md §2), nulls included. */
static void test_unknown_fields_survive(void)
{
    static const char text[] =
        "{\"Custom\":[1,{\"a\":null}],\"Data\":{\"X\":null},\"GlobalUpdates\":[0,[]],"
        "\"MetaData\":{\"Extra\":\"keep\",\"MetaTags\":{\"t\":[]},\"Zeta\":{}},"
        "\"WasOverwritten\":false}";
    char *out = round_trip(text);

    PS_ASSERT_STR_EQ(out, text);
    free(out);
}

/* A stored null is Lua nil: known fields that are null are simply absent. */
static void test_null_is_absent(void)
{
    ps_doc_report report;
    json_t *doc = decode_str(
        "{\"Data\":{},\"GlobalUpdates\":[0,[]],\"MetaData\":{\"ActiveSession\":null,"
        "\"ForceLoadSession\":null,\"MetaTags\":null,\"LastUpdate\":null},"
        "\"UserIds\":null,\"WasCorrupted\":null,\"RobloxMetaData\":null}",
        &report);
    char *out = encode(doc);

    PS_ASSERT_EQ(report.bad, 0);
    PS_ASSERT_STR_EQ(out, "{\"Data\":{},\"GlobalUpdates\":[0,[]],\"MetaData\":"
                          "{\"MetaTags\":{}}}");
    free(out);
    json_decref(doc);
    /* Data null and MetaData null: nothing of a profile is there. */
    doc = decode_str("{\"Data\":null,\"GlobalUpdates\":[1,[[1,1,false,{}]]]}", &report);
    PS_ASSERT_EQ(report.bad, 0);
    PS_ASSERT_EQ(report.kind, PS_DOC_GU_ONLY);
    json_decref(doc);
}

/* Roblox numbers are doubles: integral reals become integers where the core reads
 * integers, and ProfileStore's 3-element ActiveSession is accepted. */
static void test_integral_reals(void)
{
    ps_doc_report report;
    json_t *doc = decode_str(
        "{\"Data\":{\"F\":2.0},\"GlobalUpdates\":[2.0,[[1.0,2.0,false,{}]]],"
        "\"MetaData\":{\"ActiveSession\":[1000.0,\"job-A\",\"guid\"],\"LastUpdate\":"
        "1.5,\"MetaTags\":{},\"SessionLoadCount\":3.0}}",
        &report);
    char *out = encode(doc);

    PS_ASSERT_EQ(report.bad, 0);
    PS_ASSERT(json_is_integer(meta_get(doc, "SessionLoadCount")));
    PS_ASSERT_STR_EQ(out, "{\"Data\":{\"F\":2.0},\"GlobalUpdates\":[2,[[1,2,false,{}]]],"
                          "\"MetaData\":{\"ActiveSession\":[1000,\"job-A\",\"guid\"],"
                          "\"LastUpdate\":1.5,\"MetaTags\":{},\"SessionLoadCount\":3}}");
    free(out);
    json_decref(doc);
}

/* An absent key decodes as MISSING, and that is not a corruption. */
static void test_absent_key(void)
{
    ps_doc_report report;
    json_t *doc = NULL;

    PS_ASSERT_OK(ps__document_decode(&doc, &report, NULL, 0));
    PS_ASSERT_EQ(report.kind, PS_DOC_MISSING);
    PS_ASSERT_EQ(report.bad, 0);
    PS_ASSERT_STR_EQ(report.what, "");
    PS_ASSERT(json_is_object(doc) && json_object_size(doc) == 0);
    json_decref(doc);
}

/* ------------------------------------------------------------------------------ */
/* Corrupt documents: tests/data/corrupt/, one case per file                       */

static const struct {
    const char *file;
    ps_doc_kind kind;
    unsigned bad;
    const char *what; /* expected message, or its prefix when it ends in "…" */
} corrupt[] = {
    {"not_json.json", PS_DOC_MISSING, PS_DOC_BAD_JSON, "document is not json: …"},
    {"empty.json", PS_DOC_MISSING, PS_DOC_BAD_JSON, "document is not json: …"},
    {"string.json", PS_DOC_MISSING, PS_DOC_BAD_JSON,
     "document is a string, not an object"},
    {"array.json", PS_DOC_MISSING, PS_DOC_BAD_JSON,
     "document is an array, not an object"},
    {"empty_object.json", PS_DOC_MISSING, PS_DOC_BAD_JSON,
     "document has no Data, MetaData or GlobalUpdates"},
    {"invalid_utf8.json", PS_DOC_MISSING, PS_DOC_BAD_JSON, "document is not json: …"},
    {"duplicate_keys.json", PS_DOC_MISSING, PS_DOC_BAD_JSON,
     "document is not json: duplicate object key…"},
    {"data_number.json", PS_DOC_EXISTING, PS_DOC_BAD_DATA, "Data is a number"},
    {"data_missing.json", PS_DOC_EXISTING, PS_DOC_BAD_DATA, "Data is missing"},
    {"data_bad_with_global_updates.json", PS_DOC_MISSING, PS_DOC_BAD_DATA,
     "Data is a number"},
    {"metadata_string.json", PS_DOC_EXISTING, PS_DOC_BAD_META, "MetaData is a string"},
    {"metadata_missing.json", PS_DOC_EXISTING, PS_DOC_BAD_META, "MetaData is missing"},
    {"session_load_count_string.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.SessionLoadCount is a string"},
    {"session_load_count_negative.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.SessionLoadCount is -1, not a count"},
    {"active_session_numbers.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.ActiveSession is not [place_id, job_id]"},
    {"active_session_string.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.ActiveSession is a string, not [place_id, job_id]"},
    {"force_load_session_short.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.ForceLoadSession is not [place_id, job_id]"},
    {"meta_tags_number.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.MetaTags is a number"},
    {"profile_create_time_string.json", PS_DOC_EXISTING, PS_DOC_BAD_META,
     "MetaData.ProfileCreateTime is a string"},
    {"global_updates_bad_entry.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates[1][1] has an invalid version"},
    {"global_updates_not_array.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates is an object, not [update_index, updates]"},
    {"global_updates_short.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates is an array of 1, not [update_index, updates]"},
    {"global_updates_bad_list.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates[1] is a string, not a list of updates"},
    {"global_updates_index_low.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates[0] is 1, below update id 2"},
    {"global_updates_duplicate_id.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates[1][1] repeats update id 2"},
    {"global_updates_missing.json", PS_DOC_EXISTING, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates is missing"},
    {"global_updates_only_bad_entry.json", PS_DOC_GU_ONLY, PS_DOC_BAD_GLOBAL,
     "GlobalUpdates[1][1] has a non-boolean locked flag"},
    {"user_ids_string.json", PS_DOC_EXISTING, PS_DOC_BAD_OTHER, "UserIds[0] is a string"},
    {"roblox_metadata_number.json", PS_DOC_EXISTING, PS_DOC_BAD_OTHER,
     "RobloxMetaData is a number"},
    {"was_corrupted_string.json", PS_DOC_EXISTING, PS_DOC_BAD_OTHER,
     "WasCorrupted is a string"},
};

static void assert_what(const char *file, const char *what, const char *want)
{
    static const char ellipsis[] = "…";
    const size_t e = sizeof ellipsis - 1;
    size_t n = strlen(want);

    PS_ASSERT(what[0] != '\0');
    if (n >= e && strcmp(want + n - e, ellipsis) == 0)
        n -= e;
    else
        n = strlen(what) + 1; /* exact match: compare the NULs too */
    if (strncmp(what, want, n) != 0)
        PS_FAIL("%s: what is \"%s\", want \"%s\"", file, what, want);
}

/* Decoding the repaired tree again finds nothing new to repair, so a repaired
 * document that is written back reads the same. Only a missing component (or a
 * missing profile) is still reported: decoding removes, it never invents. */
static void assert_repair_is_stable(const json_t *doc, const ps_doc_report *first)
{
    ps_doc_report again;
    char *out = encode(doc);
    json_t *doc2 = decode_str(out, &again);

    PS_ASSERT(json_equal(doc, doc2));
    PS_ASSERT_EQ(again.kind, first->kind);
    if (first->kind == PS_DOC_GU_ONLY ||
        (json_object_get(doc, "Data") && json_object_get(doc, "MetaData") &&
         json_object_get(doc, "GlobalUpdates")))
        PS_ASSERT_EQ(again.bad, 0);
    else
        PS_ASSERT(again.bad != 0);
    json_decref(doc2);
    free(out);
}

static void test_corrupt_files(void)
{
    char path[512];
    size_t i, len;

    for (i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        ps_doc_report report;
        char *text;
        json_t *doc = NULL;

        snprintf(path, sizeof path, CORRUPT "%s", corrupt[i].file);
        text = read_file(path, &len);
        PS_ASSERT_OK(ps__document_decode(&doc, &report, text, len));
        if (report.bad != corrupt[i].bad || report.kind != corrupt[i].kind)
            PS_FAIL("%s: bad %u kind %d, want bad %u kind %d (%s)", corrupt[i].file,
                    report.bad, (int)report.kind, corrupt[i].bad, (int)corrupt[i].kind,
                    report.what);
        assert_what(corrupt[i].file, report.what, corrupt[i].what);
        PS_ASSERT(json_is_object(doc));
        if (report.kind == PS_DOC_MISSING)
            PS_ASSERT_EQ(json_object_size(doc), 0);
        assert_repair_is_stable(doc, &report);
        json_decref(doc);
        free(text);
    }
}

static json_t *decode_file(const char *name, ps_doc_report *report)
{
    char path[512];
    size_t len;
    char *text;
    json_t *doc = NULL;

    snprintf(path, sizeof path, CORRUPT "%s", name);
    text = read_file(path, &len);
    PS_ASSERT_OK(ps__document_decode(&doc, report, text, len));
    free(text);
    return doc;
}

/* Entry-level corruption drops only the bad entry; a bad shape keeps what it can,
 * and the index never falls below an id already issued. */
static void test_global_updates_repair(void)
{
    static const struct {
        const char *file;
        const char *want;
    } cases[] = {
        {"global_updates_bad_entry.json",
         "[3,[[1,1,false,{\"Gift\":1}],[3,2,true,{\"Gift\":3}]]]"},
        {"global_updates_not_array.json", "[0,[]]"},
        {"global_updates_bad_list.json", "[4,[]]"},
        {"global_updates_short.json", "[5,[]]"},
        {"global_updates_index_low.json", "[2,[[2,1,false,{}]]]"},
        {"global_updates_duplicate_id.json", "[2,[[2,1,false,{\"a\":1}]]]"},
        {"global_updates_only_bad_entry.json", "[2,[[1,1,false,{}]]]"},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ps_doc_report report;
        json_t *doc = decode_file(cases[i].file, &report);
        char *gu = json_dumps(json_object_get(doc, "GlobalUpdates"), JSON_COMPACT);

        PS_ASSERT(gu != NULL);
        if (strcmp(gu, cases[i].want) != 0)
            PS_FAIL("%s: GlobalUpdates %s, want %s", cases[i].file, gu, cases[i].want);
        free(gu);
        json_decref(doc);
    }
}

/* A bad field is removed and the rest of the profile is kept. */
static void test_bad_fields_removed(void)
{
    ps_doc_report report;
    json_t *doc = decode_file("session_load_count_string.json", &report);

    PS_ASSERT(meta_get(doc, "SessionLoadCount") == NULL);
    PS_ASSERT_EQ(json_integer_value(meta_get(doc, "ProfileCreateTime")), 1700000000);
    PS_ASSERT_EQ(json_integer_value(json_object_get(json_object_get(doc, "Data"),
                                                    "Coins")),
                 1);
    json_decref(doc);
    doc = decode_file("meta_tags_number.json", &report);
    PS_ASSERT(json_is_object(meta_get(doc, "MetaTags")));
    json_decref(doc);
    doc = decode_file("data_number.json", &report);
    PS_ASSERT(json_object_get(doc, "Data") == NULL);
    PS_ASSERT(json_is_object(json_object_get(doc, "MetaData")));
    json_decref(doc);
}

/* ------------------------------------------------------------------------------ */
/* Encode                                                                          */

static void test_encode_size_limit(void)
{
    static const char text[] = "{\"Data\":{\"Coins\":1},\"GlobalUpdates\":[0,[]],"
                               "\"MetaData\":{\"MetaTags\":{}}}";
    ps_doc_report report;
    json_t *doc = decode_str(text, &report);
    size_t size = strlen(text), len = 99;
    char *out = (char *)"untouched";

    PS_ASSERT_STATUS(ps__document_encode(&out, &len, doc, size - 1), PS_ETOOBIG);
    PS_ASSERT(out == NULL);
    PS_ASSERT_EQ(len, 0);
    PS_ASSERT_EQ(ps_error_last()->code, PS_ETOOBIG);
    PS_ASSERT(strstr(ps_error_last()->message, "size limit") != NULL);
    PS_ASSERT_STATUS(ps__document_encode(&out, &len, doc, 1), PS_ETOOBIG);
    /* Exactly at the limit fits. */
    PS_ASSERT_OK(ps__document_encode(&out, &len, doc, size));
    PS_ASSERT_EQ(len, size);
    PS_ASSERT_STR_EQ(out, text);
    free(out);
    json_decref(doc);
}

/* Strings with NUL and non-ASCII text: what we write must read back the same. */
static void test_encode_reads_back(void)
{
    json_t *doc = json_pack("{s:{s:s#,s:s},s:[i,[]],s:{s:{}}}", "Data", "Nul", "a\0b", 3,
                            "Name", "Zo\xc3\xab \xe2\x82\xac", "GlobalUpdates", 0,
                            "MetaData", "MetaTags");
    ps_doc_report report;
    char *out;
    json_t *back;

    PS_ASSERT(doc != NULL);
    out = encode(doc);
    back = decode_str(out, &report);
    PS_ASSERT_EQ(report.bad, 0);
    PS_ASSERT(json_equal(doc, back));
    json_decref(back);
    free(out);
    json_decref(doc);
}

static void test_encode_not_object(void)
{
    json_t *array = json_array();
    char *out = NULL;
    size_t len = 0;

    PS_ASSERT_STATUS(ps__document_encode(&out, &len, array, 0), PS_EINVAL);
    PS_ASSERT_STR_EQ(ps_error_last()->message, "document is an array, not an object");
    PS_ASSERT(out == NULL);
    json_decref(array);
    /* jansson lets a caller build a string without checking it; the encoder refuses. */
    array = json_pack("{s:o}", "Data", json_stringn_nocheck("\xff", 1));
    PS_ASSERT(array != NULL);
    PS_ASSERT_STATUS(ps__document_encode(&out, &len, array, 0), PS_EINVAL);
    PS_ASSERT(strstr(ps_error_last()->message, "not encodable") != NULL);
    PS_ASSERT(out == NULL);
    json_decref(array);
}

/* ------------------------------------------------------------------------------ */
/* Session tags                                                                    */

static void test_session_tags(void)
{
    json_t *tag = ps__session_tag_new(1000, "job-A");
    json_t *real = json_pack("[f,s]", 1000.0, "job-A");
    json_t *three = json_pack("[i,s,s]", 1000, "job-A", "guid");
    int64_t place = 0;
    const char *job = NULL;

    PS_ASSERT(tag != NULL && real != NULL && three != NULL);
    PS_ASSERT_EQ(json_array_size(tag), 2);
    PS_ASSERT(json_is_integer(json_array_get(tag, 0)));
    PS_ASSERT(ps__session_tag_is(tag, 1000, "job-A"));
    PS_ASSERT(ps__session_tag_is(real, 1000, "job-A"));
    PS_ASSERT(ps__session_tag_is(three, 1000, "job-A"));
    PS_ASSERT(!ps__session_tag_is(tag, 1001, "job-A"));
    PS_ASSERT(!ps__session_tag_is(tag, 1000, "job-B"));
    PS_ASSERT(!ps__session_tag_is(tag, 1000, "job-A2"));
    PS_ASSERT(!ps__session_tag_is(tag, 1000, NULL));
    PS_ASSERT(!ps__session_tag_is(NULL, 1000, "job-A"));
    PS_ASSERT_EQ(ps__session_tag_get(real, &place, &job), 1);
    PS_ASSERT_EQ(place, 1000);
    PS_ASSERT_STR_EQ(job, "job-A");
    PS_ASSERT_EQ(ps__session_tag_get(three, NULL, NULL), 1);
    json_decref(three);
    json_decref(real);
    json_decref(tag);
    tag = ps__session_tag_new(INT64_MAX, "");
    PS_ASSERT(ps__session_tag_is(tag, INT64_MAX, ""));
    json_decref(tag);
    PS_ASSERT(ps__session_tag_new(1, NULL) == NULL);
}

/* Anything but [integral number, string, …] is not a tag; outputs stay untouched. */
static void test_session_tags_wrong_types(void)
{
    static const char *bad[] = {
        "[1000]", "[\"1000\",\"job-A\"]", "[1000,2000]", "[1000.5,\"job-A\"]",
        "[1e30,\"job-A\"]", "[null,\"job-A\"]", "[1000,null]", "[]",
        "{\"0\":1000,\"1\":\"job-A\"}", "\"job-A\"", "[1000,\"a\\u0000b\"]",
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *tag = json_loads(bad[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        int64_t place = 7;
        const char *job = "untouched";

        PS_ASSERT(tag != NULL);
        if (ps__session_tag_get(tag, &place, &job) != 0)
            PS_FAIL("%s read as a session tag", bad[i]);
        PS_ASSERT_EQ(place, 7);
        PS_ASSERT_STR_EQ(job, "untouched");
        PS_ASSERT(!ps__session_tag_is(tag, 1000, "job-A"));
        PS_ASSERT(!ps__session_tag_is(tag, 1000, "a"));
        json_decref(tag);
    }
    PS_ASSERT_EQ(ps__session_tag_get(NULL, NULL, NULL), 0);
}

/* ------------------------------------------------------------------------------ */
/* Integers and names                                                              */

static void test_json_get_int(void)
{
    json_t *v;
    int64_t n = 0;

    v = json_integer(-5);
    PS_ASSERT_EQ(ps__json_get_int(v, &n), 1);
    PS_ASSERT_EQ(n, -5);
    json_decref(v);
    v = json_real(3.0);
    PS_ASSERT_EQ(ps__json_get_int(v, &n), 1);
    PS_ASSERT_EQ(n, 3);
    json_decref(v);
    v = json_real(-9223372036854775808.0);
    PS_ASSERT_EQ(ps__json_get_int(v, &n), 1);
    PS_ASSERT(n == INT64_MIN);
    json_decref(v);
    n = 42;
    v = json_real(3.5);
    PS_ASSERT_EQ(ps__json_get_int(v, &n), 0);
    json_decref(v);
    v = json_real(9223372036854775808.0); /* 2^63: one past INT64_MAX */
    PS_ASSERT_EQ(ps__json_get_int(v, &n), 0);
    json_decref(v);
    v = json_string("3");
    PS_ASSERT_EQ(ps__json_get_int(v, &n), 0);
    json_decref(v);
    PS_ASSERT_EQ(ps__json_get_int(json_true(), &n), 0);
    PS_ASSERT_EQ(ps__json_get_int(NULL, &n), 0);
    PS_ASSERT_EQ(n, 42);
}

/* Overlong forms, surrogates, code points past U+10FFFF and broken sequences. */
static void test_utf8_name_invalid(void)
{
    size_t i;
    static const char *invalid[] = {
        "\x80",             /* lone continuation byte */
        "a\xc3",            /* truncated 2-byte sequence */
        "\xe2\x82",         /* truncated 3-byte sequence */
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xed\xbf\xbf",     /* surrogate U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", /* never a lead byte */
        "\xff",
        "ok\xe2\x28\xa1",   /* bad continuation */
    };

    for (i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        if (ps__utf8_name_ok(invalid[i], 50))
            PS_FAIL("invalid UTF-8 #%zu accepted", i);
}

/* 1..max_bytes bytes, counted in bytes, not characters. */
static void test_utf8_name_ok(void)
{
    char name[64];
    size_t i;

    PS_ASSERT(!ps__utf8_name_ok(NULL, 50));
    PS_ASSERT(!ps__utf8_name_ok("", 50));
    PS_ASSERT(!ps__utf8_name_ok("a", 0));
    PS_ASSERT(ps__utf8_name_ok("a", 1));
    memset(name, 'k', 50);
    name[50] = '\0';
    PS_ASSERT(ps__utf8_name_ok(name, 50));
    name[50] = 'k';
    name[51] = '\0';
    PS_ASSERT(!ps__utf8_name_ok(name, 50));
    PS_ASSERT(ps__utf8_name_ok("Zo\xc3\xab", 50));                /* U+00EB */
    PS_ASSERT(ps__utf8_name_ok("\xe2\x82\xac", 50));              /* U+20AC */
    PS_ASSERT(ps__utf8_name_ok("\xed\x9f\xbf", 50));              /* U+D7FF */
    PS_ASSERT(ps__utf8_name_ok("\xee\x80\x80", 50));              /* U+E000 */
    PS_ASSERT(ps__utf8_name_ok("\xf0\x9f\x98\x80", 50));          /* U+1F600 */
    PS_ASSERT(ps__utf8_name_ok("\xf4\x8f\xbf\xbf", 50));          /* U+10FFFF */
    PS_ASSERT(ps__utf8_name_ok("Player_\xe7\x8e\xa9\xe5\xae\xb6", 50));
    /* 25 two-byte characters are 50 bytes; a 26th is over, whatever the count. */
    for (i = 0; i < 26; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[50] = '\0';
    PS_ASSERT(ps__utf8_name_ok(name, 50));
    name[50] = '\xc3';
    name[52] = '\0';
    PS_ASSERT(!ps__utf8_name_ok(name, 50));
    /* A multibyte character cut by the limit is no help either. */
    PS_ASSERT(!ps__utf8_name_ok("\xe2\x82\xac", 2));
    PS_ASSERT(ps__utf8_name_ok("x", SIZE_MAX));
}

/* ------------------------------------------------------------------------------ */
/* Out of memory: every allocation failure gives PS_ENOMEM, never a crash or leak  */

static long allocs_left;

static void *failing_malloc(size_t size)
{
    if (allocs_left-- <= 0)
        return NULL;
    return malloc(size);
}

/* Fails allocation n, n+1, … of one decode: each run gives PS_ENOMEM or, once no
 * allocation fails, the normal result. Memory pressure must never read as corruption
 * (the core would repair a good profile). */
static void decode_under_oom(const char *path)
{
    size_t len;
    char *text = read_file(path, &len), *want = NULL, *got;
    ps_doc_report ref, report;
    json_t *doc = NULL;
    long n;
    int rc;

    PS_ASSERT_OK(ps__document_decode(&doc, &ref, text, len));
    want = encode(doc);
    json_decref(doc);
    for (n = 0;; n++) {
        json_set_alloc_funcs(failing_malloc, free);
        allocs_left = n;
        rc = ps__document_decode(&doc, &report, text, len);
        json_set_alloc_funcs(malloc, free);
        if (rc == PS_ENOMEM) {
            PS_ASSERT(doc == NULL);
            PS_ASSERT_STR_EQ(ps_error_last()->message, "out of memory");
            continue;
        }
        PS_ASSERT_OK(rc);
        if (report.bad != ref.bad || report.kind != ref.kind ||
            strcmp(report.what, ref.what) != 0)
            PS_FAIL("%s: failing allocation %ld gave \"%s\"", path, n, report.what);
        got = encode(doc);
        PS_ASSERT_STR_EQ(got, want);
        free(got);
        json_decref(doc);
        if (allocs_left > 0)
            break; /* nothing failed: every allocation has been tried */
    }
    free(want);
    free(text);
}

static void test_out_of_memory(void)
{
    static const char *files[] = {
        FIXTURES "04_global_updates_only.json",
        FIXTURES "05_active_and_locked_updates.json",
        CORRUPT "global_updates_bad_entry.json",
        CORRUPT "global_updates_duplicate_id.json",
        CORRUPT "session_load_count_string.json",
        CORRUPT "data_bad_with_global_updates.json",
        CORRUPT "not_json.json",
    };
    size_t i;
    json_t *doc = json_pack("{s:{s:i,s:i},s:[i,[]]}", "Data", "b", 1, "a", 2,
                            "GlobalUpdates", 0);
    char *out = NULL;
    size_t len = 0;

    for (i = 0; i < sizeof files / sizeof files[0]; i++)
        decode_under_oom(files[i]);
    /* Encoding sorts keys with jansson's allocator: a failure is an error, not a
     * truncated document. */
    PS_ASSERT(doc != NULL);
    json_set_alloc_funcs(failing_malloc, free);
    allocs_left = 0;
    PS_ASSERT(ps__document_encode(&out, &len, doc, 0) != PS_OK);
    json_set_alloc_funcs(malloc, free);
    PS_ASSERT(out == NULL);
    json_decref(doc);
}

/* ------------------------------------------------------------------------------ */
/* Bad arguments: a code and a message, nothing touched, nothing crashes           */

static void test_bad_args(void)
{
    ps_doc_report report;
    json_t *doc = (json_t *)1, *obj = json_object();
    char *out = (char *)"x";
    size_t len = 7;

    PS_ASSERT_STATUS(ps__document_decode(NULL, &report, "{}", 2), PS_EINVAL);
    PS_ASSERT(ps_error_last()->message[0] != '\0');
    PS_ASSERT_STATUS(ps__document_decode(&doc, NULL, "{}", 2), PS_EINVAL);
    PS_ASSERT(doc == NULL);
    PS_ASSERT(strstr(ps_error_last()->message, "NULL") != NULL);
    PS_ASSERT_STATUS(ps__document_encode(NULL, &len, obj, 0), PS_EINVAL);
    PS_ASSERT_EQ(len, 0);
    PS_ASSERT_STATUS(ps__document_encode(&out, NULL, obj, 0), PS_EINVAL);
    PS_ASSERT(out == NULL);
    PS_ASSERT_STATUS(ps__document_encode(&out, &len, NULL, 0), PS_EINVAL);
    PS_ASSERT(strstr(ps_error_last()->message, "NULL") != NULL);
    PS_ASSERT_EQ(obj->refcount, 1);
    json_decref(obj);
    PS_ASSERT_EQ(ps__session_tag_is(NULL, 0, NULL), 0);
    PS_ASSERT_EQ(ps__session_tag_get(NULL, NULL, NULL), 0);
    PS_ASSERT_EQ(ps__json_get_int(NULL, NULL), 0);
    PS_ASSERT_EQ(ps__utf8_name_ok(NULL, 0), 0);
    /* Binary garbage with an embedded NUL: reported, not a crash. */
    PS_ASSERT_OK(ps__document_decode(&doc, &report, "{\"Data\"\0:{}}", 12));
    PS_ASSERT_EQ(report.bad, PS_DOC_BAD_JSON);
    json_decref(doc);
}

int main(void)
{
    PS_RUN(test_fixtures_round_trip);
    PS_RUN(test_fixture_fields);
    PS_RUN(test_empty_tables);
    PS_RUN(test_unknown_fields_survive);
    PS_RUN(test_null_is_absent);
    PS_RUN(test_integral_reals);
    PS_RUN(test_absent_key);
    PS_RUN(test_corrupt_files);
    PS_RUN(test_global_updates_repair);
    PS_RUN(test_bad_fields_removed);
    PS_RUN(test_encode_size_limit);
    PS_RUN(test_encode_reads_back);
    PS_RUN(test_encode_not_object);
    PS_RUN(test_session_tags);
    PS_RUN(test_session_tags_wrong_types);
    PS_RUN(test_json_get_int);
    PS_RUN(test_utf8_name_invalid);
    PS_RUN(test_utf8_name_ok);
    PS_RUN(test_out_of_memory);
    PS_RUN(test_bad_args);
    printf("ok\n");
    return 0;
}
