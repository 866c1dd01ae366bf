/* The reference ceiling for Tools/bench: OpenBLAS SGEMM GFLOP/s on N x N x N (default 1024),
 * row-major, C = A B, on the threads that OPENBLAS_NUM_THREADS (and taskset) allow.
 * Prints one JSON object: {"n", "reps", "median_gflops", "best_gflops", "openblas"}. */
#define _GNU_SOURCE
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1024, reps = argc > 2 ? atoi(argv[2]) : 20;
    if (n <= 0 || reps <= 0 || reps > 1000) return 2;
    size_t count = (size_t)n * (size_t)n;
    float *a = aligned_alloc(64, count * sizeof(float)), *b = aligned_alloc(64, count * sizeof(float)),
          *c = aligned_alloc(64, count * sizeof(float));
    if (!a || !b || !c) return 1;
    unsigned s = 12345;
    for (size_t i = 0; i < count; i++) {
        s = s * 1103515245u + 12345u;
        a[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        s = s * 1103515245u + 12345u;
        b[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    for (int w = 0; w < 3; w++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double *g = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        g[r] = 2.0 * n * n * (double)n / (now() - t0) / 1e9;
    }
    qsort(g, (size_t)reps, sizeof(double), cmp);
    printf("{\"n\":%d,\"reps\":%d,\"median_gflops\":%.2f,\"best_gflops\":%.2f,\"checksum\":%.3f,\"openblas\":\"%s\"}\n", n, reps,
           g[reps / 2], g[reps - 1], (double)c[count / 2], openblas_get_config());
    return 0;
}
