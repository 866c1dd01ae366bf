/* mdl_sgemm: the one matrix product generated code calls. OpenBLAS runs single-threaded
 * (its idle workers would spin between products while the pool runs other kernels); a
 * large product is cut into parts that run on the pool, and the cuts never depend on the
 * thread count, so 1 and 2 threads give the same bytes:
 * - a product much deeper than it is wide (a weight gradient: k is the batch times the
 *   positions) is cut along k into slices chosen from its shape alone: the first slice goes
 *   to C, the others to scratch, then C adds them in order (banding would make every thread
 *   pack the whole of the operand it shares; slicing packs each element once);
 * - a tall product is cut into bands of C's rows at multiples of GEMM_BAND: OpenBLAS computes
 *   a row of C the same way whatever rows precede it in the call, as long as the band starts
 *   on its register tile (measured: 12 rows on Zen 3; 16-row bands agreed on Skylake-X), so
 *   one thread runs it whole and two threads run one band each;
 * - a wide product is cut into a fixed number of column bands, on any thread count: where a
 *   column starts in the call changes its bytes (measured on Zen 3 at every offset), and the
 *   operand each band packs again (A, the short side) is small.
 * Products called from inside a pool job (a batch of small products spread over the pool)
 * run on that thread. */
#include "internal.h"

#include <cblas.h>
#include <stdlib.h>

/* Below this many multiply-adds a product runs on the calling thread: a hand-off to the
 * pool costs microseconds. */
#define GEMM_PARALLEL_WORK (1 << 20)
/* Row band granularity: a multiple of OpenBLAS's register tiles on current x86 and ARM cores
 * (4, 8, 12, 16, 24). */
#define GEMM_BAND 48
/* Column bands of a wide product: at most this many, each at least GEMM_COLUMNS wide. */
#define GEMM_COLUMN_PARTS 8
#define GEMM_COLUMNS 64
/* At most this many k slices; a slice is at least twice as deep as C is wide or tall. */
#define GEMM_MAX_SLICES 8

typedef struct {
    bool trans_a, trans_b, by_rows;
    int64_t band; /* rows or columns per band */
    int64_t m, n, k, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    float beta;
    int64_t depth;  /* k of each slice (the last one may be shallower) */
    float *partial; /* slices 1, 2, ... as dense m x n matrices */
} gemm_job;

static void gemm_call(const gemm_job *g, int64_t m, int64_t n, const float *a, const float *b, float *c) {
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
                (blasint)n, (blasint)g->k, 1.0f, a, (blasint)g->lda, b, (blasint)g->ldb, g->beta, c, (blasint)g->ldc);
}

static void gemm_slices(void *ctx, int64_t lo, int64_t hi) {
    const gemm_job *g = ctx;
    for (int64_t s = lo; s < hi; s++) {
        int64_t first = s * g->depth, depth = g->k - first < g->depth ? g->k - first : g->depth;
        const float *a = g->trans_a ? g->a + first * g->lda : g->a + first;
        const float *b = g->trans_b ? g->b + first : g->b + first * g->ldb;
        float *c = s == 0 ? g->c : g->partial + (s - 1) * g->m * g->n;
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, (blasint)g->m,
                    (blasint)g->n, (blasint)depth, 1.0f, a, (blasint)g->lda, b, (blasint)g->ldb, s == 0 ? g->beta : 0.0f, c,
                    (blasint)(s == 0 ? g->ldc : g->n));
    }
}

typedef struct {
    const gemm_job *g;
    int64_t slices;
} slice_sum;

static void add_slices(void *ctx, int64_t lo, int64_t hi) {
    const slice_sum *t = ctx;
    const gemm_job *g = t->g;
    for (int64_t i = lo; i < hi; i++) {
        float *row = g->c + i * g->ldc;
        for (int64_t s = 1; s < t->slices; s++) {
            const float *part = g->partial + (s - 1) * g->m * g->n + i * g->n;
            for (int64_t j = 0; j < g->n; j++) row[j] += part[j];
        }
    }
}

/* The calling thread's scratch for slices: grown when a product needs more, then reused. */
static float *slice_scratch(int64_t floats) {
    static _Thread_local float *block;
    static _Thread_local int64_t capacity;
    if (floats > capacity) {
        free(block);
        block = aligned_alloc(64, (size_t)(floats + 15) / 16 * 64);
        capacity = block ? floats : 0;
    }
    return block;
}

/* Row bands lo ..< hi in one call (the bands of a thread are contiguous); column bands one
 * call each, so that the calls do not depend on how the pool groups them. */
static void gemm_bands(void *ctx, int64_t lo, int64_t hi) {
    const gemm_job *g = ctx;
    if (g->by_rows) {
        int64_t first = lo * g->band, last = hi * g->band < g->m ? hi * g->band : g->m;
        const float *a = g->trans_a ? g->a + first : g->a + first * g->lda;
        gemm_call(g, last - first, g->n, a, g->b, g->c + first * g->ldc);
        return;
    }
    for (int64_t band = lo; band < hi; band++) {
        int64_t first = band * g->band, last = first + g->band < g->n ? first + g->band : g->n;
        const float *b = g->trans_b ? g->b + first * g->ldb : g->b + first;
        gemm_call(g, g->m, last - first, g->a, b, g->c + first);
    }
}

void mdl_sgemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
               int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    bool timed = mdl_profiling && !threads_is_worker();
    double start = timed ? now_seconds() : 0;
    gemm_job g = {trans_a != 0, trans_b != 0, m >= n, GEMM_BAND, m, n, k, lda, ldb, ldc, a, b, c, beta, k, NULL};
    int64_t wide = m > n ? m : n, slices = k / (2 * wide);
    if (slices > GEMM_MAX_SLICES) slices = GEMM_MAX_SLICES;
    if (m * n * k >= GEMM_PARALLEL_WORK && slices >= 2 && (g.partial = slice_scratch((slices - 1) * m * n)) != NULL) {
        g.depth = (k + slices - 1) / slices;
        mdl_parallel_for(slices, gemm_slices, &g);
        slice_sum t = {&g, slices};
        mdl_parallel_for(m, add_slices, &t);
    } else if (m * n * k < GEMM_PARALLEL_WORK || (g.by_rows && threads_count() == 1)) {
        gemm_call(&g, m, n, a, b, c);
    } else if (g.by_rows) {
        mdl_parallel_for((m + g.band - 1) / g.band, gemm_bands, &g);
    } else {
        int64_t parts = n / GEMM_COLUMNS;
        parts = parts < 1 ? 1 : parts > GEMM_COLUMN_PARTS ? GEMM_COLUMN_PARTS : parts;
        g.band = ((n + parts - 1) / parts + 15) / 16 * 16;
        mdl_parallel_for((n + g.band - 1) / g.band, gemm_bands, &g);
    }
    if (timed) profile_gemm(now_seconds() - start);
}
