/* The runtime of binaries built by `mdlc build`: the ABI between generated code and the
 * runtime. docs/RUNTIME.md is the contract; this header only declares it. */
#ifndef MDL_RUNTIME_H
#define MDL_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sizes per input/output in the shape arrays: unused trailing entries are 0. */
#define MDL_MAX_RANK 8

/* One entry point per IR function. Returns 0 ok, 1 bad input shape, 2 index out of range,
 * 3 non-finite value (only while mdl_check_numerics is set). */
typedef int32_t (*mdl_function)(void **globals,           /* every global's buffer, manifest order */
                                void *const *in_data,     /* one buffer per input */
                                const int64_t *in_shapes, /* MDL_MAX_RANK sizes per input */
                                void **out_data,          /* set by the callee: valid until its next call */
                                int64_t *out_shapes,      /* written by the callee: MDL_MAX_RANK per output */
                                int32_t key);             /* the random key (ignored without one) */

/* Called by the generated main. */
int mdl_main(int argc, char **argv, const char *manifest, const mdl_function *functions);

/* Called by generated code. */
void mdl_set_error(const char *message); /* message text is static; not copied */
extern int32_t mdl_check_numerics;       /* 0 or 1, set by --check-numerics */
int32_t mdl_report_nonfinite(const char *function, int64_t op, const char *op_text); /* returns 3 */
double mdl_rng_uniform(int32_t key, int64_t stream, int64_t index); /* [0,1), 24 bits */
double mdl_rng_normal(int32_t key, int64_t stream, int64_t index);  /* Box-Muller */
int32_t mdl_rng_fold(int32_t key, int32_t i);
extern int32_t mdl_profiling;           /* 0 or 1, set by --profile */
int64_t mdl_profile_start(void);        /* 0 unless profiling: then a start time for mdl_profile_record */
void mdl_profile_record(const char *kernel, const char *op_text, int64_t start);
/* The arena of an entry function's temporaries (arena.c): live holds each buffer's first and
 * last step; the function writes sizes (bytes) and reads offsets after mdl_arena, which returns
 * the arena (NULL when out of memory). planned, total and valid belong to the runtime. */
typedef struct {
    int64_t n;
    const int64_t *live;
    int64_t *sizes, *offsets, *planned;
    int64_t total, valid;
} mdl_arena_plan;
void *mdl_arena(mdl_arena_plan *plan);
/* Offsets such that buffers whose live intervals meet do not overlap; returns the arena size. */
int64_t mdl_arena_layout(int64_t n, const int64_t *live, const int64_t *sizes, int64_t *offsets);
/* The block of one result of an entry function, reused by its next call (NULL: out of memory). */
typedef struct {
    void *data;
    int64_t capacity;
} mdl_result_block;
void *mdl_result(mdl_result_block *block, int64_t bytes);
void mdl_parallel_for(int64_t n, void (*body)(void *ctx, int64_t lo, int64_t hi), void *ctx);
/* Row-major C[m,n] = op(A)[m,k] op(B)[k,n] + beta C; split over the pool when large. */
void mdl_sgemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
               int64_t ldb, float beta, float *c, int64_t ldc);

#ifdef __cplusplus
}
#endif

#endif
