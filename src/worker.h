/* worker.h — the backend worker threads. The host submits jobs; a worker runs
 * job->run (backend I/O only, never user code); the host collects finished jobs in
 * submission-independent completion order and applies them (uv_queue_work style). */
#ifndef PS_WORKER_H
#define PS_WORKER_H

typedef struct ps_job {
    struct ps_job *next;
    void (*run)(struct ps_job *job); /* worker thread */
} ps_job;

typedef struct ps_pool ps_pool;

/** Starts @p threads workers. @return PS_OK; PS_ENOMEM; PS_EINVAL (threads < 1). */
int ps__pool_new(ps_pool **out, int threads);
/** Queues @p job. Thread-safe. */
void ps__pool_submit(ps_pool *pool, ps_job *job);
/** Detaches the finished jobs, oldest completion first; NULL when none. */
ps_job *ps__pool_take_done(ps_pool *pool);
/** Blocks until a finished job is waiting or @p seconds (real time) pass. */
void ps__pool_wait(ps_pool *pool, double seconds);
/** Number of jobs submitted and not yet taken with take_done. */
int ps__pool_pending(ps_pool *pool);
/** Finishes queued jobs, joins the threads and frees the pool. Finished jobs not yet
 *  taken are dropped (the caller must have taken them). NULL accepted. */
void ps__pool_free(ps_pool *pool);

#endif /* PS_WORKER_H */
