/* strmap.h — a small string-keyed hash map of pointers, for per-key state on the
 * host thread (active profiles, per-key queues, pending loads). Not thread-safe. */
#ifndef PS_STRMAP_H
#define PS_STRMAP_H

#include <stddef.h>

typedef struct ps_strmap_entry {
    struct ps_strmap_entry *next;
    size_t hash;
    void *value;
    char key[]; /* NUL-terminated copy */
} ps_strmap_entry;

typedef struct ps_strmap {
    ps_strmap_entry **buckets;
    size_t nbuckets;
    size_t count;
} ps_strmap;

/** The value stored under @p key, or NULL. */
void *ps__strmap_get(const ps_strmap *map, const char *key);
/** Stores @p value (non-NULL) under @p key, replacing. @return PS_OK or PS_ENOMEM. */
int ps__strmap_set(ps_strmap *map, const char *key, void *value);
/** Removes @p key. @return the removed value, or NULL. */
void *ps__strmap_remove(ps_strmap *map, const char *key);
/** Calls @p fn for every entry (do not modify the map inside). */
void ps__strmap_foreach(const ps_strmap *map, void (*fn)(const char *key, void *value,
                                                         void *userdata),
                        void *userdata);
/** Frees the map's memory (not the values). */
void ps__strmap_dispose(ps_strmap *map);

#endif /* PS_STRMAP_H */
