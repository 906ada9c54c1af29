/* fuzz_common.h — what the libFuzzer targets share: a CHECK that names the target and
 * aborts (libFuzzer saves the input), and a json_equal that compares keys with their
 * length. Define FUZZ_NAME before including it. */
#ifndef PS_FUZZ_COMMON_H
#define PS_FUZZ_COMMON_H

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, FUZZ_NAME ": %s:%d: check failed: %s: ", __FILE__, __LINE__, \
                    #cond);                                                              \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* json_equal with keys compared by length (jansson 2.14's json_equal looks keys up
 * with strlen, so keys holding a NUL byte would compare wrongly). */
static inline int fuzz_same(const json_t *a, const json_t *b)
{
    if (json_is_object(a) && json_is_object(b)) {
        const char *key;
        size_t key_len;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_keylen_foreach((json_t *)a, key, key_len, v)
        {
            if (!fuzz_same(v, json_object_getn(b, key, key_len)))
                return 0;
        }
        return 1;
    }
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!fuzz_same(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    return a && b && json_equal((json_t *)a, (json_t *)b);
}

#endif /* PS_FUZZ_COMMON_H */
