/* The thread pool behind mdl_parallel_for. Chunks depend only on n and the thread count,
 * so a kernel that writes disjoint ranges gives the same result on every run. */
#include "internal.h"

#include <cblas.h>
#include <pthread.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

extern int blas_thread_shutdown_(void) __attribute__((weak));

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int threads; /* the calling thread included */
    uint64_t generation; /* bumped per job, so a worker never runs one job twice */
    int64_t n;
    int chunks;
    int pending;
    void (*body)(void *, int64_t, int64_t);
    void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 1, 0, 0, 0, 0, NULL, NULL};

/* Set on pool threads and while the caller runs its chunk: a nested call runs inline
 * instead of waiting for workers that are busy with the outer job. */
static _Thread_local bool inside_job, is_worker;

static void chunk_bounds(int64_t n, int chunks, int c, int64_t *lo, int64_t *hi) {
    *lo = n * c / chunks;
    *hi = n * (c + 1) / chunks;
}

/* Waiting threads spin this many pauses (tens of microseconds) before they block: kernels
 * follow each other within microseconds, and a blocked thread takes far longer to wake (and
 * the scheduler tends to wake it on the busy core). */
#define SPIN_PAUSES 4000

static inline void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    inside_job = is_worker = true;
    flush_subnormals();
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN_PAUSES && __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) == seen; i++) pause_briefly();
        pthread_mutex_lock(&pool.mu);
        while (pool.generation == seen) pthread_cond_wait(&pool.go, &pool.mu);
        seen = pool.generation;
        int chunks = pool.chunks;
        int64_t n = pool.n;
        void (*body)(void *, int64_t, int64_t) = pool.body;
        void *ctx = pool.ctx;
        pthread_mutex_unlock(&pool.mu);
        if (id >= chunks) continue;
        int64_t lo, hi;
        chunk_bounds(n, chunks, id, &lo, &hi);
        body(ctx, lo, hi);
        pthread_mutex_lock(&pool.mu);
        if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.mu);
    }
    return NULL;
}

int threads_count(void) { return inside_job ? 1 : pool.threads; }

bool threads_is_worker(void) { return is_worker; }

void flush_subnormals(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ and DAZ */
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr | (1u << 24))); /* FZ */
#endif
}

int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

void threads_init(int n) {
    /* mdl_sgemm spreads products over the pool: OpenBLAS runs single-threaded, and its own
     * threads (started when the library loaded) are stopped, or they keep waking up and take
     * the cores from the pool. */
    openblas_set_num_threads(1);
    if (blas_thread_shutdown_) blas_thread_shutdown_();
    flush_subnormals();
    pool.threads = 1;
    for (int i = 1; i < n; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker, (void *)(intptr_t)i);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            warn("--threads: could only start %d threads", i);
            break;
        }
        pool.threads = i + 1;
    }
}

void mdl_parallel_for(int64_t n, void (*body)(void *ctx, int64_t lo, int64_t hi), void *ctx) {
    if (n <= 0) return;
    if (n == 1 || pool.threads == 1 || inside_job) {
        body(ctx, 0, n);
        return;
    }
    int chunks = n < pool.threads ? (int)n : pool.threads;
    pthread_mutex_lock(&pool.mu);
    pool.n = n;
    pool.chunks = chunks;
    pool.body = body;
    pool.ctx = ctx;
    pool.pending = chunks - 1;
    __atomic_store_n(&pool.generation, pool.generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);

    int64_t lo, hi;
    chunk_bounds(n, chunks, 0, &lo, &hi);
    inside_job = true;
    body(ctx, lo, hi);
    inside_job = false;

    for (int i = 0; i < SPIN_PAUSES && __atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0; i++) pause_briefly();
    pthread_mutex_lock(&pool.mu);
    while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
}
