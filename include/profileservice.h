/*
 * profileservice.h — ProfileService for C: session-locked game-player profiles.
 *
 * This header is the whole consumer API. It follows the seed document (API.md) name
 * for name: ProfileService.GetProfileStore becomes ps_service_get_profile_store,
 * ProfileStore:LoadProfileAsync becomes ps_store_load_profile, and so on.
 *
 * Threads: every function is host-only (call it from the thread that runs
 * ps_service_update) unless its documentation says "Thread-safe". Listeners, handlers
 * and done callbacks run only on the host thread, inside ps_service_update() or inside
 * the blocking call that caused them. Backend I/O runs on worker threads.
 *
 * Errors: functions that can fail return PS_OK (0) or a negative ps_status; the
 * message of the last failure on the calling thread is ps_error_last()->message.
 *
 * JSON values are jansson json_t. Every json_t parameter or result is marked
 * *borrowed* (no reference changes hands), *new* (the caller owns a new reference)
 * or *steals* (the function takes the caller's reference, even when it fails).
 */
#ifndef PROFILESERVICE_H
#define PROFILESERVICE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PS_EXTERN __attribute__((visibility("default")))
#else
#define PS_EXTERN
#endif

/** Status codes. Each names what the caller may do next. */
typedef enum ps_status {
    PS_OK = 0,
    PS_EINVAL = -1,     /**< bad argument (NULL, empty, over-long, non-UTF-8, wrong type) */
    PS_ENOTFOUND = -2,  /**< no such key, update id or meta tag */
    PS_ELOCKED = -3,    /**< the profile is already loaded by this service */
    PS_ECONFLICT = -4,  /**< another server's force load took precedence; or CAS gave up */
    PS_ECORRUPT = -5,   /**< a stored document has invalid components */
    PS_ETOOBIG = -6,    /**< a document would exceed the size limit */
    PS_ERELEASED = -7,  /**< the profile is no longer active (released or lost) */
    PS_ESHUTDOWN = -8,  /**< the service is locked (shutting down or shut down) */
    PS_EBACKEND = -9,   /**< the store failed (I/O, connection, SQL); retry later */
    PS_ENOMEM = -10,    /**< out of memory */
    PS_ECANCELLED = -11, /**< the not_released handler answered Cancel, or a newer
                              load of the same key took over this one */
    PS_EVIEW = -12      /**< the method is not available on a view profile */
} ps_status;

/** The last failure on this thread. */
typedef struct ps_error {
    int code;            /**< a ps_status */
    const char *message; /**< one lowercase line naming the bad value */
} ps_error;

/**
 * The last failure recorded on the calling thread. Thread-safe.
 * @return never NULL; valid until the next failure on this thread. Before any failure
 *         the code is PS_OK and the message is "no error".
 */
PS_EXTERN const ps_error *ps_error_last(void);

/** "PS_EINVAL" and so on for a ps_status; "PS_UNKNOWN" otherwise. Thread-safe. */
PS_EXTERN const char *ps_status_name(int code);

/* ------------------------------------------------------------------------------ */
/* Opaque objects                                                                  */

typedef struct ps_service ps_service;             /**< ProfileService */
typedef struct ps_profile_store ps_profile_store; /**< ProfileStore */
typedef struct ps_profile ps_profile;             /**< Profile */
typedef struct ps_global_updates ps_global_updates; /**< GlobalUpdates */
typedef struct ps_connection ps_connection;       /**< ScriptConnection */
typedef struct ps_backend ps_backend;             /**< see profileservice/backend.h */

/* ------------------------------------------------------------------------------ */
/* Configuration                                                                   */

/**
 * Time source, in seconds. When set, it is used both for timestamps written to the
 * store (ProfileCreateTime, LastUpdate: Unix seconds expected) and for scheduling
 * (auto-save, retries, issue window), exactly as it returns them. Must be
 * thread-safe: workers read it too.
 *
 * Clocks (README "Clocks"): without an injected clock, stamps are the system clock
 * moved onto the store's own clock when the store has one (PostgreSQL: the offset to
 * its clock_timestamp() is measured at ps_service_new and every 5 minutes), so
 * servers whose clocks disagree compare LastUpdate on one clock.
 */
typedef double (*ps_clock_fn)(void *userdata);

/**
 * Waits @p seconds. Blocking calls use it when nothing but a timer is pending (a load
 * retry). A test with a virtual clock advances the clock here instead of sleeping.
 */
typedef void (*ps_sleep_fn)(double seconds, void *userdata);

#define PS_CONFIG_VERSION 1

/** Service settings. Fill with ps_config_init(), then change what you need. */
typedef struct ps_config {
    unsigned int version;    /**< PS_CONFIG_VERSION */
    const char *store_url;   /**< "sqlite:PATH", "memory:", "postgres://…";
                                  NULL → $PROFILESERVICE_STORE, else
                                  "sqlite:profiles.db" */
    ps_backend *backend;     /**< optional, overrides store_url; the service takes it
                                  and calls its free exactly once, even on failure */
    int64_t place_id;        /**< first element of the session tag; default 0 */
    const char *job_id;      /**< second element; NULL → host name + pid + random suffix */

    double auto_save_period;        /**< AutoSaveProfiles, default 30 s */
    double write_cooldown;          /**< min spacing of calls on one key, default 0 s
                                         (Roblox's RobloxWriteCooldown was 7 s) */
    double load_repeat_delay;       /**< wait between load/release retries, default 7 s */
    int force_load_max_steps;       /**< ForceLoadMaxSteps, default 8 */
    double assume_dead_session_lock; /**< AssumeDeadSessionLock, default 1800 s:
                                          another server's lock is dead once its
                                          LastUpdate is further than this from now,
                                          on either side (a stamp that far in the
                                          future is a broken clock); ±5 min of skew
                                          between servers is well inside it */
    int issue_count_for_critical_state; /**< default 5 */
    double issue_last;              /**< lifetime of one issue, default 120 s */
    double critical_state_last;     /**< default 120 s */
    size_t max_document_size;       /**< encoded document limit, default 4 MB */
    int worker_threads;             /**< backend worker threads, default 4 */

    ps_clock_fn clock;        /**< NULL → the system clocks */
    ps_sleep_fn sleep;        /**< NULL → nanosleep */
    void *clock_userdata;     /**< passed to clock and sleep */
} ps_config;

/** Fills @p config with the defaults above. */
PS_EXTERN void ps_config_init(ps_config *config);

/* ------------------------------------------------------------------------------ */
/* Connections (ScriptConnection)                                                  */

/**
 * Disconnects a listener. Idempotent, and safe inside any listener, including the
 * one running. The listener's free_userdata runs exactly once, here or when the
 * signal's owner is freed. The handle itself is freed when its owner (service or
 * profile) is freed; do not use it after that. NULL is accepted.
 */
PS_EXTERN void ps_connection_disconnect(ps_connection *connection);

/* ------------------------------------------------------------------------------ */
/* ProfileService                                                                  */

/**
 * Creates a service: opens the backend, starts the worker threads.
 * @param[out] out the new service; free it with ps_service_free().
 * @return PS_OK; PS_EINVAL (bad config: wrong version, negative timing, bad URL);
 *         PS_EBACKEND (the store could not be opened); PS_ENOMEM.
 */
PS_EXTERN int ps_service_new(ps_service **out, const ps_config *config);

/**
 * Shuts the service down if that has not happened (see ps_service_shutdown), then
 * frees it, its stores and its connections. Profiles the caller still holds become
 * inert: inactive, their data still readable until ps_profile_free. NULL is accepted.
 */
PS_EXTERN void ps_service_free(ps_service *service);

/**
 * The host's tick (Roblox's Heartbeat): applies finished backend work, runs auto-saves
 * spread over the period, starts due retries, fires listeners and done callbacks.
 * Never blocks on backend I/O.
 * @return PS_OK; PS_EINVAL when called from inside a listener (re-entrant tick).
 */
PS_EXTERN int ps_service_update(ps_service *service);

/**
 * BindToClose: sets ServiceLocked, releases every active profile and returns when
 * every release save and every pending load has finished. Later calls of the
 * store methods fail with PS_ESHUTDOWN. Calling it twice is harmless.
 * @return PS_OK; PS_EINVAL (NULL service, or called from inside a listener).
 */
PS_EXTERN int ps_service_shutdown(ps_service *service);

/** ProfileService.ServiceLocked: nonzero once shutdown has begun. */
PS_EXTERN int ps_service_locked(const ps_service *service);

/** This service's session tag [place_id, job_id]. @return borrowed strings. */
PS_EXTERN int64_t ps_service_place_id(const ps_service *service);
PS_EXTERN const char *ps_service_job_id(const ps_service *service);

/** IssueSignal listener: a failed backend call (store and key may be NULL). */
typedef void (*ps_issue_fn)(const char *error_message, const char *store_name,
                            const char *key, void *userdata);
/** CorruptionSignal listener. */
typedef void (*ps_corruption_fn)(const char *store_name, const char *key,
                                 void *userdata);
/** CriticalStateSignal listener. */
typedef void (*ps_critical_state_fn)(int is_critical_state, void *userdata);

/**
 * ProfileService.IssueSignal:Connect(). @param[out] out the connection, borrowed
 * (owned by the service); may be NULL when the caller never disconnects.
 * @p free_userdata (may be NULL) runs exactly once, at disconnect or service free.
 * @return PS_OK; PS_EINVAL (NULL service or fn; free_userdata is not run then).
 */
PS_EXTERN int ps_service_issue_signal_connect(ps_connection **out, ps_service *service,
                                              ps_issue_fn fn, void *userdata,
                                              void (*free_userdata)(void *userdata));
/** ProfileService.CorruptionSignal:Connect(); as ps_service_issue_signal_connect. */
PS_EXTERN int ps_service_corruption_signal_connect(ps_connection **out,
                                                   ps_service *service,
                                                   ps_corruption_fn fn, void *userdata,
                                                   void (*free_userdata)(void *userdata));
/** ProfileService.CriticalStateSignal:Connect(); as ps_service_issue_signal_connect. */
PS_EXTERN int ps_service_critical_state_signal_connect(
    ps_connection **out, ps_service *service, ps_critical_state_fn fn, void *userdata,
    void (*free_userdata)(void *userdata));

/** Nonzero while the service is in critical state. */
PS_EXTERN int ps_service_is_critical_state(const ps_service *service);

/**
 * ProfileService.GetProfileStore(profile_store_name, profile_template).
 * @param[out] out the store, borrowed: owned by the service, valid until
 *        ps_service_free. Asking twice for one name returns the same store.
 * @param name 1..50 bytes of UTF-8.
 * @param profile_template borrowed; must be an object; deep-copied.
 * @return PS_OK; PS_EINVAL (bad name, non-object template, the same name asked with a
 *         different template); PS_ESHUTDOWN; PS_ENOMEM.
 */
PS_EXTERN int ps_service_get_profile_store(ps_profile_store **out, ps_service *service,
                                           const char *name,
                                           const json_t *profile_template);

/* ------------------------------------------------------------------------------ */
/* ProfileStore                                                                    */

/** What a not_released handler answers. */
typedef enum ps_not_released_action {
    PS_REPEAT = 1,     /**< "Repeat": try again after load_repeat_delay */
    PS_CANCEL = 2,     /**< "Cancel": the load fails with PS_ECANCELLED */
    PS_FORCE_LOAD = 3, /**< "ForceLoad": ask the owner to release; steal after
                            force_load_max_steps attempts */
    PS_STEAL = 4       /**< "Steal": take the session at once (latest ProfileService) */
} ps_not_released_action;

/**
 * not_released_handler(place_id, game_job_id): called on the host thread each time
 * another session holds the profile. NULL in place of a handler means "ForceLoad".
 */
typedef ps_not_released_action (*ps_not_released_fn)(int64_t place_id,
                                                     const char *game_job_id,
                                                     void *userdata);

/**
 * Done callback of the non-blocking load and view. @p profile is new: the callee
 * owns it and frees it with ps_profile_free (NULL unless status is PS_OK).
 */
typedef void (*ps_profile_done_fn)(int status, ps_profile *profile, void *userdata);

/**
 * ProfileStore:LoadProfileAsync(profile_key, not_released_handler), blocking: runs the
 * host tick until the load ends, so listeners may fire inside it.
 * @param[out] out the profile, new: free it with ps_profile_free (freeing does not
 *        release it; call ps_profile_release first).
 * @param key 1..50 bytes of UTF-8.
 * @param handler NULL (= ForceLoad) or a handler; @p userdata is passed to it.
 * @return PS_OK; PS_EINVAL (bad key; called inside a listener); PS_ELOCKED (this
 *         service already holds the key active); PS_ECANCELLED (handler said Cancel,
 *         or a newer load of the key took over); PS_ECONFLICT (another server's force
 *         load took precedence); PS_ESHUTDOWN (ServiceLocked). Backend failures are
 *         retried (IssueSignal each time), as ProfileService does.
 */
PS_EXTERN int ps_store_load_profile(ps_profile **out, ps_profile_store *store,
                                    const char *key, ps_not_released_fn handler,
                                    void *userdata);

/**
 * The non-blocking LoadProfileAsync: returns at once; the backend work runs on a
 * worker; @p handler and @p done run on the host thread inside ps_service_update.
 * @p done runs exactly once when this returns PS_OK, never when it fails.
 * @return PS_OK (queued); PS_EINVAL; PS_ELOCKED; PS_ESHUTDOWN; PS_ENOMEM.
 */
PS_EXTERN int ps_store_load_profile_async(ps_profile_store *store, const char *key,
                                          ps_not_released_fn handler,
                                          ps_profile_done_fn done, void *userdata);

/**
 * ProfileStore:ViewProfileAsync(profile_key), blocking. Reads, never writes.
 * @param[out] out a view profile, new (ps_profile_free). For a never-created key its
 *        data and meta data are NULL. Writing and saving are not possible.
 * @return PS_OK; PS_EINVAL; PS_ESHUTDOWN. Backend failures are retried.
 */
PS_EXTERN int ps_store_view_profile(ps_profile **out, ps_profile_store *store,
                                    const char *key);

/** The non-blocking ViewProfileAsync; as ps_store_load_profile_async. */
PS_EXTERN int ps_store_view_profile_async(ps_profile_store *store, const char *key,
                                          ps_profile_done_fn done, void *userdata);

/** The store's name. @return borrowed. */
PS_EXTERN const char *ps_store_name(const ps_profile_store *store);

/* ------------------------------------------------------------------------------ */
/* Profile                                                                         */

/**
 * Profile.Data. @return borrowed; the host reads and mutates it freely (it must stay
 * an object). NULL for a view of a never-created key. Valid until ps_profile_free.
 */
PS_EXTERN json_t *ps_profile_data(ps_profile *profile);

/**
 * Profile.MetaData as a read-only object: ProfileCreateTime, SessionLoadCount,
 * ActiveSession, ForceLoadSession (when set), LastUpdate, MetaTags, MetaTagsLatest.
 * ProfileCreateTime and LastUpdate are Unix seconds on the store's clock where it has
 * one (see ps_clock_fn).
 * @return borrowed, do not modify (use ps_profile_set_meta_tag); NULL for a view of a
 *         never-created key.
 */
PS_EXTERN const json_t *ps_profile_meta_data(ps_profile *profile);

/** MetaData.ProfileCreateTime (Unix seconds); 0 when there is no meta data. */
PS_EXTERN double ps_profile_create_time(const ps_profile *profile);
/** MetaData.SessionLoadCount; 0 when there is no meta data. */
PS_EXTERN int64_t ps_profile_session_load_count(const ps_profile *profile);
/**
 * MetaData.ActiveSession. @param[out] place_id, job_id (borrowed; either may be NULL).
 * @return 1 when a session is set, 0 when released (outputs untouched).
 */
PS_EXTERN int ps_profile_active_session(const ps_profile *profile, int64_t *place_id,
                                        const char **job_id);
/** MetaData.MetaTags. @return borrowed; writable only through set_meta_tag. */
PS_EXTERN const json_t *ps_profile_meta_tags(const ps_profile *profile);
/** MetaData.MetaTagsLatest: the meta tags the store holds after the last save.
 *  @return borrowed. */
PS_EXTERN const json_t *ps_profile_meta_tags_latest(const ps_profile *profile);

/** The profile's key and store. @return borrowed. */
PS_EXTERN const char *ps_profile_key(const ps_profile *profile);
PS_EXTERN ps_profile_store *ps_profile_store_of(const ps_profile *profile);

/** Profile:IsActive(): nonzero while the profile is loaded and owned here. */
PS_EXTERN int ps_profile_is_active(const ps_profile *profile);

/**
 * Profile:GetMetaTag(tag_name). @return borrowed value, or NULL when absent or on a
 * bad name (then ps_error_last says which).
 */
PS_EXTERN json_t *ps_profile_get_meta_tag(const ps_profile *profile,
                                          const char *tag_name);

/**
 * Profile:SetMetaTag(tag_name, value): saved with the next save.
 * @param value borrowed (a reference is taken).
 * @return PS_OK; PS_EINVAL (empty or non-UTF-8 name, NULL value); PS_EVIEW;
 *         PS_ERELEASED.
 */
PS_EXTERN int ps_profile_set_meta_tag(ps_profile *profile, const char *tag_name,
                                      json_t *value);
/** As ps_profile_set_meta_tag, but steals @p value, even when it fails. */
PS_EXTERN int ps_profile_set_meta_tag_new(ps_profile *profile, const char *tag_name,
                                          json_t *value);

/**
 * ListenToRelease listener. @p place_id / @p job_id name the session that took the
 * profile over (job_id NULL when the store shows no owner, e.g. our own release: then
 * they are this service's own tag, as ProfileService passes them).
 */
typedef void (*ps_release_fn)(ps_profile *profile, int64_t place_id,
                              const char *job_id, void *userdata);

/**
 * Profile:ListenToRelease(listener). On an already released profile the listener runs
 * at once. @param[out] out connection, borrowed (owned by the profile); may be NULL.
 * @return PS_OK; PS_EINVAL; PS_EVIEW (view profiles never release).
 */
PS_EXTERN int ps_profile_listen_to_release(ps_connection **out, ps_profile *profile,
                                           ps_release_fn fn, void *userdata,
                                           void (*free_userdata)(void *userdata));

/**
 * Profile:Release(): release listeners run before it returns; the final save
 * (ActiveSession removed) is written by a worker and retried until it succeeds.
 * Does not block. @return PS_OK (also when already released); PS_EVIEW; PS_EINVAL.
 */
PS_EXTERN int ps_profile_release(ps_profile *profile);

/**
 * Profile:Save(): queues a save now (dropped when one is already queued for the key).
 * Does not block; failures reach IssueSignal.
 * @return PS_OK; PS_EVIEW; PS_ERELEASED; PS_ETOOBIG (Data over the size limit:
 *         nothing queued); PS_EINVAL.
 */
PS_EXTERN int ps_profile_save(ps_profile *profile);

/**
 * Replaces Profile.Data (for bindings that keep Data in their own language and copy it
 * back before each save). Steals @p data, even when it fails. Also allowed inside
 * the before-save hook of the final (release) save.
 * @return PS_OK; PS_EINVAL (not an object); PS_EVIEW; PS_ERELEASED.
 */
PS_EXTERN int ps_profile_set_data_new(ps_profile *profile, json_t *data);

/** Replaces MetaData.MetaTags wholesale; as ps_profile_set_data_new. */
PS_EXTERN int ps_profile_set_meta_tags_new(ps_profile *profile, json_t *meta_tags);

/**
 * Before-save hook: runs on the host thread right before any save of this profile
 * (auto-save, Save, Release, shutdown) takes its snapshot of Data and MetaTags — the
 * place to copy a host-language view into the profile (the Lua binding does). A
 * nonzero return (with ps_error_set) fails that save: IssueSignal gets the message and
 * nothing stored changes; a release save is then retried later.
 */
typedef int (*ps_before_save_fn)(ps_profile *profile, void *userdata);

/** Sets (or with NULL clears) the before-save hook. @return PS_OK; PS_EINVAL. */
PS_EXTERN int ps_profile_set_before_save(ps_profile *profile, ps_before_save_fn fn,
                                         void *userdata);

/**
 * Frees the caller's handle. An active profile is NOT released by this (the service
 * keeps it and auto-saves it until ps_profile_release or shutdown) — call
 * ps_profile_release first. NULL is accepted.
 */
PS_EXTERN void ps_profile_free(ps_profile *profile);

/* ------------------------------------------------------------------------------ */
/* GlobalUpdates                                                                   */

/**
 * Global updates send data to a profile across servers, online or offline: gifts,
 * admin grants. Each is Active (changeable by GlobalUpdateProfileAsync), then Locked
 * by its owner (ready to process), then Cleared (gone). Three kinds of object share
 * this type: a profile's own (ps_profile_global_updates: listen, lock, clear), the
 * handler's (inside ps_store_global_update_profile: add, change, clear active) and
 * read-only results (views and the global update call's result). get_* work on all.
 */

/** Profile.GlobalUpdates. @return borrowed; lives as long as the profile. */
PS_EXTERN ps_global_updates *ps_profile_global_updates(ps_profile *profile);

/**
 * GlobalUpdates:GetActiveUpdates() → {{update_id, update_data}, …}: Active updates
 * not yet locked locally. @param[out] out new array of [id, data] pairs (data shared
 * by reference: do not modify it). @return PS_OK; PS_EINVAL; PS_ENOMEM.
 */
PS_EXTERN int ps_global_updates_get_active_updates(json_t **out,
                                                   ps_global_updates *global_updates);
/** GlobalUpdates:GetLockedUpdates(): Locked updates not yet cleared locally; as
 *  ps_global_updates_get_active_updates. */
PS_EXTERN int ps_global_updates_get_locked_updates(json_t **out,
                                                   ps_global_updates *global_updates);

/** New-update listener: @p update_data is borrowed for the call. */
typedef void (*ps_global_update_listener_fn)(ps_global_updates *global_updates,
                                             int64_t update_id, json_t *update_data,
                                             void *userdata);

/**
 * GlobalUpdates:ListenToNewActiveUpdate(listener): fires after a save pulled a new
 * Active update or a new version of one; at most once per id and version.
 * @param[out] out connection, borrowed (owned by the profile); may be NULL.
 * @return PS_OK; PS_EVIEW (a view's or a call result's global updates); PS_EINVAL
 *         (a handler's global updates, or NULL fn); PS_ERELEASED (profile inactive:
 *         no connection is made).
 */
PS_EXTERN int ps_global_updates_listen_to_new_active_update(
    ps_connection **out, ps_global_updates *global_updates,
    ps_global_update_listener_fn fn, void *userdata, void (*free_userdata)(void *));

/**
 * GlobalUpdates:ListenToNewLockedUpdate(listener): fires after the save that locked
 * an update. Apply it to Data inside the listener and call
 * ps_global_updates_clear_locked_update: the Data change and the clear reach the
 * store in one atomic write, so the update is applied exactly once.
 * @return as ps_global_updates_listen_to_new_active_update.
 */
PS_EXTERN int ps_global_updates_listen_to_new_locked_update(
    ps_connection **out, ps_global_updates *global_updates,
    ps_global_update_listener_fn fn, void *userdata, void (*free_userdata)(void *));

/**
 * GlobalUpdates:LockActiveUpdate(update_id): the lock is written by the next save.
 * @return PS_OK; PS_EVIEW (a view's or a result's); PS_EINVAL (a handler's; the
 *         update is not Active, or already being locked); PS_ENOTFOUND (no such id);
 *         PS_ERELEASED.
 */
PS_EXTERN int ps_global_updates_lock_active_update(ps_global_updates *global_updates,
                                                   int64_t update_id);

/**
 * GlobalUpdates:ClearLockedUpdate(update_id): removed from the store by the next save.
 * @return PS_OK; PS_EVIEW (a view's or a result's); PS_EINVAL (a handler's; the
 *         update is not Locked in the store yet, or already being cleared);
 *         PS_ENOTFOUND; PS_ERELEASED.
 */
PS_EXTERN int ps_global_updates_clear_locked_update(ps_global_updates *global_updates,
                                                    int64_t update_id);

/**
 * GlobalUpdates:AddActiveUpdate(update_data), inside an update handler only.
 * @param update_data borrowed; an object or an array.
 * @param[out] out_id the new update's id as this handler run sees it (may be NULL).
 *        When another server adds an update between the read and the write, the
 *        ids this run added are renumbered after it; the call's result holds the
 *        final ids.
 * @return PS_OK; PS_EINVAL (outside a handler; data not an object/array).
 */
PS_EXTERN int ps_global_updates_add_active_update(ps_global_updates *global_updates,
                                                  json_t *update_data, int64_t *out_id);
/** As ps_global_updates_add_active_update but steals @p update_data, even on failure. */
PS_EXTERN int ps_global_updates_add_active_update_new(ps_global_updates *global_updates,
                                                      json_t *update_data,
                                                      int64_t *out_id);

/**
 * GlobalUpdates:ChangeActiveUpdate(update_id, update_data), inside an update handler:
 * replaces the data and bumps the version. @param update_data borrowed.
 * @return PS_OK; PS_EINVAL (outside a handler; bad data; the update is Locked);
 *         PS_ENOTFOUND.
 */
PS_EXTERN int ps_global_updates_change_active_update(ps_global_updates *global_updates,
                                                     int64_t update_id,
                                                     json_t *update_data);
/** As ps_global_updates_change_active_update but steals @p update_data. */
PS_EXTERN int ps_global_updates_change_active_update_new(
    ps_global_updates *global_updates, int64_t update_id, json_t *update_data);

/**
 * GlobalUpdates:ClearActiveUpdate(update_id), inside an update handler.
 * @return PS_OK; PS_EINVAL (outside a handler; the update is Locked); PS_ENOTFOUND.
 */
PS_EXTERN int ps_global_updates_clear_active_update(ps_global_updates *global_updates,
                                                    int64_t update_id);

/**
 * update_handler(global_updates): runs on the host thread with the key's current
 * global updates; may run more than once per call (when another server changed them
 * meanwhile), so it must only act through @p global_updates. A failing method call
 * inside it fails the whole call with that status, and nothing is written.
 */
typedef void (*ps_global_update_handler_fn)(ps_global_updates *global_updates,
                                            void *userdata);

/** Done callback of the non-blocking form. @p result is new (free it with
 *  ps_global_updates_free), NULL unless status is PS_OK. */
typedef void (*ps_global_updates_done_fn)(int status, ps_global_updates *result,
                                          void *userdata);

/**
 * ProfileStore:GlobalUpdateProfileAsync(profile_key, update_handler), blocking. Works
 * on keys never created (the document gets only GlobalUpdates) and on profiles active
 * anywhere. One atomic update of the stored document.
 * @param[out] out the resulting global updates, read-only, new (may be NULL when not
 *        wanted).
 * @return PS_OK; PS_EINVAL (bad key or handler; called inside a listener); PS_ETOOBIG;
 *         the status of a failing method call in the handler; PS_ESHUTDOWN. Backend
 *         failures are retried.
 */
PS_EXTERN int ps_store_global_update_profile(ps_global_updates **out,
                                             ps_profile_store *store, const char *key,
                                             ps_global_update_handler_fn handler,
                                             void *userdata);

/** The non-blocking GlobalUpdateProfileAsync; @p handler and @p done run on the host
 *  thread inside ps_service_update. @return PS_OK (queued); PS_EINVAL; PS_ESHUTDOWN. */
PS_EXTERN int ps_store_global_update_profile_async(ps_profile_store *store,
                                                   const char *key,
                                                   ps_global_update_handler_fn handler,
                                                   ps_global_updates_done_fn done,
                                                   void *userdata);

/** Frees a read-only result of ps_store_global_update_profile. A profile's own
 *  global updates are freed with the profile (this ignores them). NULL accepted. */
PS_EXTERN void ps_global_updates_free(ps_global_updates *global_updates);

#ifdef __cplusplus
}
#endif

#endif /* PROFILESERVICE_H */
