/* profile.h — the Profile object and its save / release operations. */
#ifndef PS_PROFILE_H
#define PS_PROFILE_H

#include "document.h"
#include "service.h"

struct ps_profile {
    ps_profile *next_live, *prev_live; /* service->profiles */
    int refs;              /* the caller's handle + service bookkeeping + queued ops */
    int handle_freed;      /* ps_profile_free was called */
    ps_service *service;   /* NULL once the service is freed */
    ps_profile_store *store;
    char *key;
    int is_view;
    int active;            /* in store->active; owned by this session */

    json_t *data;          /* Data (host mutates it) */
    json_t *meta;          /* MetaData, local; "MetaTags" points at meta_tags */
    json_t *meta_tags;     /* MetaData.MetaTags */
    int64_t load_count;    /* SessionLoadCount of our session: fences our writes */
    double loaded_at;      /* monotonic */

    size_t autosave_index;
    int in_autosave;
    int save_queued;       /* a save op is waiting in the key queue */
    int release_pending;   /* the release save has not succeeded yet */

    ps_signal release_signal;
    int released;          /* release listeners have fired */
    int64_t released_place;
    char *released_job;    /* NULL: no new owner known */

    ps_global_updates *global_updates;
    int in_before_save;    /* the hook runs: the setters work even while releasing */
    ps_before_save_fn before_save;
    void *before_save_userdata;
};

/* Builds a loaded profile from the document our load wrote (session taken). The
 * profile holds one reference for the caller and one for the service.
 * @param doc borrowed. */
int ps__profile_new_loaded(ps_profile **out, ps_profile_store *store, const char *key,
                           const json_t *doc);
/* Builds a view profile; @p doc NULL (never created) gives no Data and no MetaData. */
int ps__profile_new_view(ps_profile **out, ps_profile_store *store, const char *key,
                         const json_t *doc);

void ps__profile_ref(ps_profile *profile);
void ps__profile_unref(ps_profile *profile);

/* Queues a save (releasing: the final one). */
int ps__profile_queue_save(ps_profile *profile, int releasing);
/* Local release: inactive, out of auto-save, listeners fire with (place, job). */
void ps__profile_release_locally(ps_profile *profile, int64_t place_id,
                                 const char *job_id);
/* The service is being freed: detach. */
void ps__profile_detach(ps_profile *profile);

/* Fills MetaData defaults a fresh profile gets (load's Missing hook; view of a
 * GU-only doc). @return PS_OK or PS_ENOMEM. */
int ps__meta_fill_new(json_t *meta, double now);

/* After a transform built @p doc from a decode @p report: a repaired document keeps
 * its original aside (quarantine) and says WasCorrupted=true; a normal rewrite of an
 * existing one says false (SEMANTICS.md §2). @return PS_OK or PS_ENOMEM. */
int ps__doc_mark_written(json_t *doc, ps_write *out, const ps_doc_report *report);
/* ps__doc_mark_written, then the encoding into out->doc (over @p max_size bytes:
 * PS_ETOOBIG; 0 = no limit). */
int ps__doc_write(ps_write *out, json_t *doc, const ps_doc_report *report,
                  size_t max_size);

#endif /* PS_PROFILE_H */
