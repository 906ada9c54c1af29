/*
 * common.c — helpers the commands share: reading a key, the canonical encoding of a
 * document (the library's: compact, sorted keys), and readable times and sessions.
 */
#include "profilectl.h"

#include "document.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int ctl_get(ctl *c, ps_bytes *out, const char *store, const char *key)
{
    memset(out, 0, sizeof *out);
    int rc = c->backend->get(out, c->backend, store, key);
    if (rc == PS_ENOTFOUND)
        return ctl_fail(c, "no profile \"%s\" in store \"%s\"", key, store);
    if (rc != PS_OK)
        return ctl_fail_lib(c, "cannot read the store");
    return CTL_OK;
}

char *ctl_dump(const json_t *value)
{
    return json_dumps(value, CTL_ENCODE_FLAGS | JSON_ENCODE_ANY);
}

int ctl_canonical(char **out, const char *bytes, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    *out = NULL;
    json_t *doc = json_loadb(bytes, len, CTL_DECODE_FLAGS, &jerr);
    if (!doc) {
        if (err)
            snprintf(err, errlen, "not json: %s (byte %d)", jerr.text, jerr.position);
        return -1;
    }
    *out = ctl_dump(doc);
    json_decref(doc);
    if (!*out && err)
        snprintf(err, errlen, "cannot encode the document");
    return *out ? 0 : -1;
}

double ctl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ctl_format_time(char *buf, size_t size, double t)
{
    struct tm tm;
    time_t secs = (time_t)floor(t);
    if (!isfinite(t) || fabs(t) > 1e15 || !gmtime_r(&secs, &tm) ||
        strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, size, "%.17g (not a valid time)", t);
}

void ctl_format_age(char *buf, size_t size, double t, double now)
{
    double age = now - t;
    if (!isfinite(age) || age < -1)
        snprintf(buf, size, "in the future");
    else if (age < 60)
        snprintf(buf, size, "%.0f s ago", age < 0 ? 0 : age);
    else if (age < 3600)
        snprintf(buf, size, "%.0f min ago", floor(age / 60));
    else if (age < 86400 * 2)
        snprintf(buf, size, "%.1f h ago", age / 3600);
    else
        snprintf(buf, size, "%.0f d ago", floor(age / 86400));
}

void ctl_format_session(char *buf, size_t size, const json_t *tag)
{
    int64_t place = 0;
    const char *job = NULL;
    if (ps__session_tag_get(tag, &place, &job)) {
        char *job_json = ctl_dump(json_array_get(tag, 1));
        snprintf(buf, size, "place %lld, job %s", (long long)place,
                 job_json ? job_json : "?");
        free(job_json);
        return;
    }
    char *text = ctl_dump(tag);
    snprintf(buf, size, "%s (not a valid session tag)", text ? text : "?");
    free(text);
}
