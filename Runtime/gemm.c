/* mdl_sgemm: the one matrix product generated code calls. OpenBLAS runs single-threaded
 * (its idle workers would spin between products while the pool runs other kernels); a
 * large product is cut into bands of C's rows (or columns, when C is wide) and the bands
 * run on the pool. Each element of C is still one OpenBLAS dot product over all of k, so the
 * thread count does not change the result. Products called from inside a pool job (a
 * batch of small products spread over the pool) run whole on that thread. */
#include "internal.h"

#include <cblas.h>

/* Below this many multiply-adds a product runs on the calling thread: a hand-off to the
 * pool costs microseconds. */
#define GEMM_PARALLEL_WORK (1 << 20)
/* Band granularity: a multiple of OpenBLAS's register tiles on current x86 and ARM cores. */
#define GEMM_BAND 16

typedef struct {
    bool trans_a, trans_b, by_rows;
    int64_t m, n, k, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    float beta;
} gemm_job;

static void gemm_call(const gemm_job *g, int64_t m, int64_t n, const float *a, const float *b, float *c) {
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
                (blasint)n, (blasint)g->k, 1.0f, a, (blasint)g->lda, b, (blasint)g->ldb, g->beta, c, (blasint)g->ldc);
}

static void gemm_bands(void *ctx, int64_t lo, int64_t hi) {
    const gemm_job *g = ctx;
    int64_t first = lo * GEMM_BAND;
    if (g->by_rows) {
        int64_t last = hi * GEMM_BAND < g->m ? hi * GEMM_BAND : g->m;
        const float *a = g->trans_a ? g->a + first : g->a + first * g->lda;
        gemm_call(g, last - first, g->n, a, g->b, g->c + first * g->ldc);
    } else {
        int64_t last = hi * GEMM_BAND < g->n ? hi * GEMM_BAND : g->n;
        const float *b = g->trans_b ? g->b + first * g->ldb : g->b + first;
        gemm_call(g, g->m, last - first, g->a, b, g->c + first);
    }
}

void mdl_sgemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
               int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    bool timed = mdl_profiling && !threads_is_worker();
    double start = timed ? now_seconds() : 0;
    gemm_job g = {trans_a != 0, trans_b != 0, m >= n, m, n, k, lda, ldb, ldc, a, b, c, beta};
    if (m * n * k < GEMM_PARALLEL_WORK || threads_count() == 1) {
        gemm_call(&g, m, n, a, b, c);
    } else {
        int64_t extent = g.by_rows ? m : n;
        mdl_parallel_for((extent + GEMM_BAND - 1) / GEMM_BAND, gemm_bands, &g);
    }
    if (timed) profile_gemm(now_seconds() - start);
}
