/*
 * fuzz_import.c — libFuzzer target for `profilectl import` (tools/profilectl/
 * transfer.c): its JSON-lines parser and the validation of each line.
 *
 * transfer.c is compiled into this file (#include), so its static import_all runs
 * exactly as profilectl runs it, over a fresh memory: store; the rest of profilectl
 * is linked with its main renamed. Nothing in tools/profilectl is changed for this.
 * The input is imported four times: --dry-run, a normal run, the same again
 * (every key unchanged) and --replace --any-store. Checked after each run:
 *  - nothing crashes, leaks or hangs, and the run never stops with an error
 *    (a memory: store cannot fail);
 *  - a dry run writes nothing;
 *  - every stored value is a valid profile document (decodes with bad == 0 and a
 *    kind other than MISSING): import must refuse what the library would repair;
 *  - every stored key is 1..50 bytes of UTF-8;
 *  - the written/unchanged/refused counters add up.
 */
#include <stdint.h>
#include <stdio.h>

/* transfer.c reports each refused line on stderr and a dry run prints a line per key:
 * at thousands of inputs a second that only slows the fuzzer down, so inside
 * transfer.c they go to /dev/null (opened in LLVMFuzzerInitialize). */
static FILE *quiet_stderr;
static int quiet_printf(const char *fmt, ...)
{
    (void)fmt;
    return 0;
}
#undef stderr
#define stderr quiet_stderr
#define printf(...) quiet_printf(__VA_ARGS__)
#include "../../tools/profilectl/transfer.c"
#undef printf
#undef stderr
#define stderr stderr

#define FUZZ_NAME "fuzz_import"
#include "fuzz_common.h"

#define STORE "PlayerData"

static const ctl_command fuzz_cmd = {"import", "import STORE", "", NULL};

typedef struct scan {
    ps_backend *b;
    long keys;
} scan;

static int check_key(const char *key, void *userdata)
{
    scan *s = userdata;
    ps_bytes bytes = {NULL, 0};
    json_t *doc = NULL;
    ps_doc_report report;

    CHECK(ps__utf8_name_ok(key, CTL_MAX_NAME), "stored key is not 1..50 bytes of UTF-8");
    CHECK(s->b->get(&bytes, s->b, STORE, key) == PS_OK, "listed key cannot be read");
    CHECK(ps__document_decode(&doc, &report, bytes.data, bytes.len) == PS_OK,
          "decode failed");
    CHECK(report.bad == 0 && report.kind != PS_DOC_MISSING,
          "import stored an invalid document (%s): %s", report.what, bytes.data);
    json_decref(doc);
    ps_bytes_dispose(&bytes);
    s->keys++;
    return 0;
}

static long count_and_check(ps_backend *b)
{
    scan s = {b, 0};
    CHECK(b->list(b, STORE, NULL, check_key, &s) == PS_OK, "list failed");
    return s.keys;
}

/* One import run of the whole input. @return the number of keys stored after it. */
static long run(ctl *c, const uint8_t *data, size_t size, int dry_run, int replace,
                int any_store)
{
    import_run *r = calloc(1, sizeof *r);
    FILE *in = fmemopen((void *)data, size, "r");
    long before = count_and_check(c->backend), after;

    CHECK(r && in, "out of memory");
    r->c = c;
    r->store = STORE;
    r->dry_run = dry_run;
    r->replace = replace;
    r->any_store = any_store;
    CHECK(import_all(r, in) == CTL_OK, "import stopped on a memory: store");
    CHECK(r->written + r->unchanged + r->refused <= r->line, "counters exceed lines");
    CHECK(r->replaced <= r->written, "more replaced than written");
    after = count_and_check(c->backend);
    if (dry_run)
        CHECK(after == before, "a dry run changed the store");
    seen_dispose(r);
    free(r);
    fclose(in);
    return after;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    quiet_stderr = fopen("/dev/null", "w");
    return quiet_stderr ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl c;
    long first, again;

    if (size == 0)
        return 0; /* fmemopen refuses an empty buffer */
    memset(&c, 0, sizeof c);
    c.url = "memory:";
    c.cmd = &fuzz_cmd;
    snprintf(c.url_shown, sizeof c.url_shown, "memory:");
    CHECK(ps_backend_open(&c.backend, "memory:") == PS_OK, "memory: open");
    CHECK(run(&c, data, size, 1, 0, 0) == 0, "dry run wrote");
    first = run(&c, data, size, 0, 0, 0);
    again = run(&c, data, size, 0, 0, 0);
    CHECK(again == first, "importing the same lines again added keys");
    run(&c, data, size, 0, 1, 1);
    ps_backend_free(c.backend);
    return 0;
}
