/* worker.c — a fixed pool of pthreads with one job queue and one done queue. */
#include "worker.h"

#include "error.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct job_queue {
    ps_job *head;
    ps_job **tail;
} job_queue;

struct ps_pool {
    pthread_mutex_t lock;
    pthread_cond_t work_ready; /* workers wait for jobs */
    pthread_cond_t job_done;   /* the host waits for results */
    job_queue todo, done;
    int pending; /* submitted, not yet taken */
    int stopping;
    int nthreads;
    pthread_t threads[];
};

static void queue_push(job_queue *q, ps_job *job)
{
    job->next = NULL;
    *q->tail = job;
    q->tail = &job->next;
}

static ps_job *queue_pop(job_queue *q)
{
    ps_job *job = q->head;
    if (job) {
        q->head = job->next;
        if (!q->head)
            q->tail = &q->head;
    }
    return job;
}

static void *worker_main(void *arg)
{
    ps_pool *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        ps_job *job = queue_pop(&pool->todo);
        if (!job) {
            if (pool->stopping)
                break;
            pthread_cond_wait(&pool->work_ready, &pool->lock);
            continue;
        }
        pthread_mutex_unlock(&pool->lock);
        job->run(job);
        pthread_mutex_lock(&pool->lock);
        queue_push(&pool->done, job);
        pthread_cond_broadcast(&pool->job_done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

int ps__pool_new(ps_pool **out, int threads)
{
    if (threads < 1 || threads > 256)
        return ps__error_set(PS_EINVAL, "worker_threads must be 1..256, not %d", threads);
    ps_pool *pool = calloc(1, sizeof *pool + (size_t)threads * sizeof(pthread_t));
    if (!pool)
        return ps__error_oom();
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->job_done, NULL);
    pool->todo.tail = &pool->todo.head;
    pool->done.tail = &pool->done.head;
    for (; pool->nthreads < threads; pool->nthreads++) {
        if (pthread_create(&pool->threads[pool->nthreads], NULL, worker_main, pool)) {
            ps__pool_free(pool);
            return ps__error_set(PS_ENOMEM, "cannot start worker thread");
        }
    }
    *out = pool;
    return PS_OK;
}

void ps__pool_submit(ps_pool *pool, ps_job *job)
{
    pthread_mutex_lock(&pool->lock);
    queue_push(&pool->todo, job);
    pool->pending++;
    pthread_cond_signal(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);
}

ps_job *ps__pool_take_done(ps_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    ps_job *jobs = pool->done.head;
    for (ps_job *j = jobs; j; j = j->next)
        pool->pending--;
    pool->done.head = NULL;
    pool->done.tail = &pool->done.head;
    pthread_mutex_unlock(&pool->lock);
    return jobs;
}

void ps__pool_wait(ps_pool *pool, double seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    long long ns = deadline.tv_nsec + (long long)(seconds * 1e9);
    deadline.tv_sec += (time_t)(ns / 1000000000LL);
    deadline.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&pool->lock);
    while (!pool->done.head) {
        if (pthread_cond_timedwait(&pool->job_done, &pool->lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&pool->lock);
}

int ps__pool_pending(ps_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    int n = pool->pending;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void ps__pool_free(ps_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->job_done);
    pthread_cond_destroy(&pool->work_ready);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}
