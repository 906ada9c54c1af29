/* global_updates.h — GlobalUpdates: the [update_index, [[id, version, locked, data],
 * …]] component, the owner's pending locks and clears, the handler-mode edits of
 * GlobalUpdateProfileAsync, and the diff that fires the new-update listeners. */
#ifndef PS_GLOBAL_UPDATES_H
#define PS_GLOBAL_UPDATES_H

#include "service.h"

/* Ids the owner has locked or cleared locally and the next save must write. */
typedef struct ps_gu_pending {
    int64_t *lock_ids, *clear_ids;
    size_t lock_count, clear_count;
} ps_gu_pending;

void ps__gu_pending_dispose(ps_gu_pending *pending);

/* A profile's own global updates over the stored component (borrowed). */
int ps__global_updates_new_owned(ps_global_updates **out, ps_profile *profile,
                                 const json_t *stored);
/* Read-only global updates (views; results). */
int ps__global_updates_new_view(ps_global_updates **out, ps_profile *profile,
                                const json_t *stored);
/* Frees any kind. */
void ps__global_updates_free(ps_global_updates *gu);

/* Host, at save dispatch: copies the pending ids into @p out. */
int ps__global_updates_snapshot(ps_gu_pending *out, const ps_global_updates *gu);
/* Worker, inside the owner's save transform: locks and clears in @p doc. */
int ps__gu_apply_pending(json_t *doc, const ps_gu_pending *pending);
/* Host, after an owned save: fires listeners for new ids/versions, adopts the stored
 * component, forgets pending ids the store now reflects. */
void ps__global_updates_after_save(ps_global_updates *gu, const json_t *stored);

#endif /* PS_GLOBAL_UPDATES_H */
