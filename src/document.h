/*
 * document.h — the stored profile document, field for field ProfileService's layout:
 *
 *   {"Data":{…}, "MetaData":{"ProfileCreateTime":n, "SessionLoadCount":n,
 *    "ActiveSession":[place_id, job_id], "ForceLoadSession":[…], "MetaTags":{…},
 *    "LastUpdate":n}, "RobloxMetaData":{…}, "UserIds":[…],
 *    "GlobalUpdates":[update_index, [[id, version, locked, data], …]],
 *    "WasCorrupted":false}
 *
 * Decoding validates every component and normalises the tree so the core can rely on
 * each component's type; a bad component is a corruption (reported, removed), never a
 * crash. Fields we do not know are kept and survive every write.
 */
#ifndef PS_DOCUMENT_H
#define PS_DOCUMENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/** How the stored value classifies (SEMANTICS.md §3.1). */
typedef enum ps_doc_kind {
    PS_DOC_MISSING = 0, /**< absent, or nothing usable: treat as never created */
    PS_DOC_GU_ONLY,     /**< only GlobalUpdates (written by a gift to a new key) */
    PS_DOC_EXISTING     /**< a profile: Data and MetaData present */
} ps_doc_kind;

/** Components found invalid by decode (bit set). */
enum {
    PS_DOC_BAD_JSON = 1 << 0,      /**< not JSON, not UTF-8, not an object, or an
                                        object with none of Data, MetaData and
                                        GlobalUpdates (a stored value, yet no profile) */
    PS_DOC_BAD_DATA = 1 << 1,      /**< Data not an object */
    PS_DOC_BAD_META = 1 << 2,      /**< MetaData not an object, or a field of it bad */
    PS_DOC_BAD_GLOBAL = 1 << 3,    /**< GlobalUpdates malformed (or entries dropped) */
    /* An EXISTING document also gets BAD_DATA / BAD_META / BAD_GLOBAL when that
       component is absent: PS counts a profile as existing only with all three. */
    PS_DOC_BAD_OTHER = 1 << 4      /**< RobloxMetaData / UserIds / WasCorrupted bad */
};

typedef struct ps_doc_report {
    ps_doc_kind kind;
    unsigned bad;       /**< PS_DOC_BAD_* bits; 0 = the document was valid */
    char what[160];     /**< first problem found, lowercase apart from field names, e.g.
                             "MetaData.SessionLoadCount is a string", "Data is missing",
                             "GlobalUpdates[1][0] has an invalid version", "document is
                             not json: <jansson's text> (byte N)"; "" when bad == 0 */
} ps_doc_report;

/**
 * Parses and normalises stored bytes.
 * @param[out] out new object; never NULL on PS_OK, NULL otherwise. For kind MISSING it
 *        is an empty object (nothing of the stored value is kept, as in PS).
 * @param[out] report filled on PS_OK; bad == 0 exactly when the value was valid. Any
 *        stored value that decodes as MISSING has bad != 0.
 * @param bytes may be NULL (absent key → MISSING, bad = 0).
 * A JSON null is treated as absent everywhere (Lua cannot store nil in a table): a
 * known field holding null is removed without being a problem. Unknown fields, nulls
 * included, are kept as they are.
 * Normalisation, so later code can trust types:
 *  - Data: object kept; `[]` (empty Lua table) becomes {}; anything else removed
 *    (BAD_DATA).
 *  - MetaData: must be an object (`[]` → {}), else removed (BAD_META). Inside it:
 *    ProfileCreateTime number; SessionLoadCount integer ≥ 0 (integral reals become
 *    integers); ActiveSession / ForceLoadSession null/absent or [number, string]
 *    (extra elements allowed, as ProfileStore writes 3), null ones removed;
 *    MetaTags object (`[]` → {}); LastUpdate number. A bad field is removed
 *    (BAD_META) — except MetaTags: a bad one becomes {} (BAD_META), a missing one
 *    {} (no problem). Session tags must satisfy ps__session_tag_get; their place id
 *    is stored as an integer.
 *  - GlobalUpdates: [integer index ≥ 0, [[integer id ≥ 1, integer version ≥ 1, bool,
 *    any data], …]], rebuilt with integers; bad entries and repeated ids dropped
 *    (BAD_GLOBAL); a bad shape keeps what is usable: a valid index (else 0) and the
 *    valid entries of a list (else []); an index below the highest kept id is raised
 *    to it (BAD_GLOBAL) so ids are never reissued. Absent stays absent.
 *  - RobloxMetaData object (`[]` kept as is), UserIds array of numbers, WasCorrupted
 *    bool: a bad one is removed (BAD_OTHER).
 *  - kind: EXISTING when Data or MetaData survived; GU_ONLY when neither was ever
 *    present but GlobalUpdates is; MISSING otherwise.
 * @return PS_OK (corruption is reported in @p report, not as an error); PS_EINVAL
 *         (@p out or @p report NULL); PS_ENOMEM.
 */
int ps__document_decode(json_t **out, ps_doc_report *report, const char *bytes,
                        size_t len);

/**
 * Encodes a document compactly with sorted keys (as the fixtures are stored).
 * @param[out] out malloc'd (release with free()), NUL-terminated; NULL on failure.
 * @param[out] len its length (0 on failure).
 * @param doc borrowed; must be an object.
 * @return PS_OK; PS_ETOOBIG (longer than @p max_size, when max_size > 0; nothing
 *         returned); PS_EINVAL (NULL argument, not an object, not encodable);
 *         PS_ENOMEM.
 */
int ps__document_encode(char **out, size_t *len, const json_t *doc, size_t max_size);

/** Session tag helpers. A tag is [place_id number, job_id string, …]. */
/** Nonzero when @p tag (may be NULL) is [place_id, job_id, …]; only the first two
 *  elements are compared. @p job_id NULL → 0. */
int ps__session_tag_is(const json_t *tag, int64_t place_id, const char *job_id);
/** Reads a tag: place_id an integral number (1000 or 1000.0), job_id a string with no
 *  NUL. @p place_id / @p job_id may be NULL; *job_id is borrowed from @p tag.
 *  @return 1 when @p tag is a valid tag, else 0 (outputs untouched). */
int ps__session_tag_get(const json_t *tag, int64_t *place_id, const char **job_id);
/** New [place_id, job_id] array, or NULL on out of memory (or job_id NULL or not
 *  UTF-8). */
json_t *ps__session_tag_new(int64_t place_id, const char *job_id);

/** Reads an integral JSON number (integer, or real with an integral value inside the
 *  int64 range) into @p out (may be NULL). @return 1 on success, 0 otherwise (NULL
 *  value included; @p out untouched). */
int ps__json_get_int(const json_t *value, int64_t *out);

/** Nonzero when @p s is valid UTF-8 of 1..max_bytes bytes: no overlong forms, no
 *  surrogates, nothing above U+10FFFF. NULL → 0. */
int ps__utf8_name_ok(const char *s, size_t max_bytes);

#endif /* PS_DOCUMENT_H */
