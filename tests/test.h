/* test.h — tiny assertion helpers (libuv test/task.h style). */
#ifndef PS_TEST_H
#define PS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PS_FAIL(...)                                                              \
    do {                                                                          \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                           \
        fprintf(stderr, __VA_ARGS__);                                             \
        fprintf(stderr, "\n");                                                    \
        abort();                                                                  \
    } while (0)

#define PS_ASSERT(cond)                                                           \
    do {                                                                          \
        if (!(cond))                                                              \
            PS_FAIL("assertion failed: %s", #cond);                               \
    } while (0)

#define PS_ASSERT_EQ(a, b)                                                        \
    do {                                                                          \
        long long ps_a_ = (long long)(a), ps_b_ = (long long)(b);                 \
        if (ps_a_ != ps_b_)                                                       \
            PS_FAIL("%s == %s failed: %lld != %lld", #a, #b, ps_a_, ps_b_);       \
    } while (0)

#define PS_ASSERT_STR_EQ(a, b)                                                    \
    do {                                                                          \
        const char *ps_a_ = (a), *ps_b_ = (b);                                    \
        if (!ps_a_ || !ps_b_ || strcmp(ps_a_, ps_b_) != 0)                        \
            PS_FAIL("%s == %s failed: \"%s\" != \"%s\"", #a, #b,                  \
                    ps_a_ ? ps_a_ : "(null)", ps_b_ ? ps_b_ : "(null)");          \
    } while (0)

/* Asserts a call returns the status, printing ps_error_last() on mismatch. */
#define PS_ASSERT_STATUS(call, status)                                            \
    do {                                                                          \
        int ps_rc_ = (call);                                                      \
        if (ps_rc_ != (status))                                                   \
            PS_FAIL("%s returned %s, want %s (%s)", #call, ps_status_name(ps_rc_), \
                    ps_status_name(status), ps_error_last()->message);            \
    } while (0)

#define PS_ASSERT_OK(call) PS_ASSERT_STATUS(call, PS_OK)

/* Runs one test function and prints its name. */
#define PS_RUN(fn)                                                                \
    do {                                                                          \
        printf("-- %s\n", #fn);                                                   \
        fflush(stdout);                                                           \
        fn();                                                                     \
    } while (0)

#endif /* PS_TEST_H */
