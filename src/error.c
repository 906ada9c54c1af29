/* error.c — status names and the thread-local last error. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* One slot per thread: saves fail on workers while the host reads its own errors. */
static _Thread_local char error_message[512] = "no error";
static _Thread_local ps_error last_error = {PS_OK, NULL};

const ps_error *ps_error_last(void)
{
    last_error.message = error_message;
    return &last_error;
}

int ps_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    last_error.code = code;
    return code;
}

int ps__error_oom(void)
{
    /* No formatting: formatting may itself need memory on some libcs. */
    strcpy(error_message, "out of memory");
    last_error.code = PS_ENOMEM;
    return PS_ENOMEM;
}

void ps__error_copy(char *buf, size_t size)
{
    if (size == 0)
        return;
    snprintf(buf, size, "%s", error_message);
}

const char *ps_status_name(int code)
{
    switch (code) {
    case PS_OK: return "PS_OK";
    case PS_EINVAL: return "PS_EINVAL";
    case PS_ENOTFOUND: return "PS_ENOTFOUND";
    case PS_ELOCKED: return "PS_ELOCKED";
    case PS_ECONFLICT: return "PS_ECONFLICT";
    case PS_ECORRUPT: return "PS_ECORRUPT";
    case PS_ETOOBIG: return "PS_ETOOBIG";
    case PS_ERELEASED: return "PS_ERELEASED";
    case PS_ESHUTDOWN: return "PS_ESHUTDOWN";
    case PS_EBACKEND: return "PS_EBACKEND";
    case PS_ENOMEM: return "PS_ENOMEM";
    case PS_ECANCELLED: return "PS_ECANCELLED";
    case PS_EVIEW: return "PS_EVIEW";
    default: return "PS_UNKNOWN";
    }
}
