/* strmap.c — chained hash map with FNV-1a hashing, doubling when load > 1. */
#include "strmap.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

static size_t hash_string(const char *s)
{
    size_t h = (size_t)14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= (size_t)1099511628211ULL;
    }
    return h;
}

static ps_strmap_entry **find_slot(const ps_strmap *map, const char *key, size_t hash)
{
    ps_strmap_entry **slot = &map->buckets[hash % map->nbuckets];
    while (*slot && ((*slot)->hash != hash || strcmp((*slot)->key, key) != 0))
        slot = &(*slot)->next;
    return slot;
}

void *ps__strmap_get(const ps_strmap *map, const char *key)
{
    if (map->nbuckets == 0)
        return NULL;
    ps_strmap_entry *e = *find_slot(map, key, hash_string(key));
    return e ? e->value : NULL;
}

static int grow(ps_strmap *map)
{
    size_t n = map->nbuckets ? map->nbuckets * 2 : 16;
    ps_strmap_entry **buckets = calloc(n, sizeof *buckets);
    if (!buckets)
        return ps__error_oom();
    for (size_t i = 0; i < map->nbuckets; i++) {
        ps_strmap_entry *e = map->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            e->next = buckets[e->hash % n];
            buckets[e->hash % n] = e;
        }
    }
    free(map->buckets);
    map->buckets = buckets;
    map->nbuckets = n;
    return PS_OK;
}

int ps__strmap_set(ps_strmap *map, const char *key, void *value)
{
    if (map->count >= map->nbuckets && grow(map) != PS_OK)
        return PS_ENOMEM;
    size_t hash = hash_string(key);
    ps_strmap_entry **slot = find_slot(map, key, hash);
    if (*slot) {
        (*slot)->value = value;
        return PS_OK;
    }
    size_t len = strlen(key);
    ps_strmap_entry *e = malloc(sizeof *e + len + 1);
    if (!e)
        return ps__error_oom();
    e->next = NULL;
    e->hash = hash;
    e->value = value;
    memcpy(e->key, key, len + 1);
    *slot = e;
    map->count++;
    return PS_OK;
}

void *ps__strmap_remove(ps_strmap *map, const char *key)
{
    if (map->nbuckets == 0)
        return NULL;
    ps_strmap_entry **slot = find_slot(map, key, hash_string(key));
    ps_strmap_entry *e = *slot;
    if (!e)
        return NULL;
    void *value = e->value;
    *slot = e->next;
    free(e);
    map->count--;
    return value;
}

void ps__strmap_foreach(const ps_strmap *map,
                        void (*fn)(const char *key, void *value, void *userdata),
                        void *userdata)
{
    for (size_t i = 0; i < map->nbuckets; i++)
        for (ps_strmap_entry *e = map->buckets[i]; e; e = e->next)
            fn(e->key, e->value, userdata);
}

void ps__strmap_dispose(ps_strmap *map)
{
    for (size_t i = 0; i < map->nbuckets; i++) {
        ps_strmap_entry *e = map->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(map->buckets);
    memset(map, 0, sizeof *map);
}
