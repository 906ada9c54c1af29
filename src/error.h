/* error.h — the thread-local last error (libgit2 src/util/errors.c). */
#ifndef PS_ERROR_H
#define PS_ERROR_H

#include "profileservice/backend.h"

/** Records a failure; printf-style. @return @p code. Thread-safe. */
#define ps__error_set ps_error_set

/** Records PS_ENOMEM with a static message. @return PS_ENOMEM. */
int ps__error_oom(void);

/** Copies the last message of this thread into @p buf (for handing across threads). */
void ps__error_copy(char *buf, size_t size);

#endif /* PS_ERROR_H */
