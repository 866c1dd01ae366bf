/* Checks of the runtime's parts that have no command of their own, linked against the runtime:
 *   internals rng                  the values the lead compares with the Swift CounterRNG
 *   internals gunzip FILE.gz FILE  inflate FILE.gz and compare with FILE
 *   internals json                 JSON reader edge cases
 *   internals data SOURCE DIR [CONTEXT]  load a builtin data set and print its statistics
 *   internals gemm                 mdl_sgemm against a double-precision product, 1 and 2 threads */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void expect(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

static void rng(void) {
    printf("uniform(1,2,3) = %.17g\n", mdl_rng_uniform(1, 2, 3));
    printf("normal(1,2,3) = %.17g\n", mdl_rng_normal(1, 2, 3));
    printf("fold(5,7) = %d\n", mdl_rng_fold(5, 7));
    printf("fnv1a32(\"model.fc1.w\") = %u\n", fnv1a32("model.fc1.w"));
    /* Properties that hold for any correct implementation. */
    double sum = 0, sq = 0;
    for (int i = 0; i < 100000; i++) {
        double u = mdl_rng_uniform(3, 4, i);
        expect(u >= 0 && u < 1 && u * 16777216 == floor(u * 16777216), "uniform in [0,1) with 24 bits");
        double z = mdl_rng_normal(3, 4, i);
        sum += z;
        sq += z * z;
    }
    expect(fabs(sum / 1e5) < 0.02 && fabs(sq / 1e5 - 1) < 0.02, "normal has mean 0 and variance 1");
    expect(mdl_rng_fold(5, 7) != mdl_rng_fold(5, 8) && mdl_rng_fold(5, 7) != mdl_rng_fold(6, 7), "fold mixes both inputs");
}

static void gunzip_check(const char *gz, const char *plain) {
    size_t a, b;
    uint8_t *x = read_file_maybe_gz(gz, &a), *y = read_file(plain, &b);
    expect(a == b && memcmp(x, y, a) == 0, "gunzip output equals the original");
    printf("gunzip %s: %zu bytes %s\n", gz, a, a == b && memcmp(x, y, a) == 0 ? "match" : "DIFFER");
}

static void json(void) {
    char err[128];
    const char *good = "{\"a\": [1, -2.5e3, true, null], \"s\": \"x\\u00e9\\n\\\"\", \"big\": 123456789012}";
    jvalue *v = json_parse(good, strlen(good), err, sizeof err);
    expect(v && v->type == J_OBJ && v->n == 3, "object parses");
    const jvalue *a = json_get(v, "a"), *s = json_get(v, "s"), *big = json_get(v, "big");
    expect(a && a->n == 4 && a->items[1].num == -2500 && !a->items[1].is_int, "array of numbers");
    expect(s && strcmp(s->str, "x\xc3\xa9\n\"") == 0, "string escapes");
    expect(big && big->is_int && big->ival == 123456789012LL, "large integer");
    json_free(v);
    const char *bad[] = {"{", "{\"a\" 1}", "[1,]", "\"abc", "{\"a\":1} x", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                         "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        jvalue *w = json_parse(bad[i], strlen(bad[i]), err, sizeof err);
        expect(!w, "malformed JSON is refused");
        printf("json refuses %.12s...: %s\n", bad[i], err);
    }
}

static void field_stats(const split_t *s, const field_t *f) {
    int64_t n = shape_count(f->rank, f->shape);
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = f->u8 ? f->u8[i] / 255.0 : f->dtype == DT_F32 ? ((float *)f->data)[i] : ((int32_t *)f->data)[i];
        lo = fmin(lo, v);
        hi = fmax(hi, v);
        sum += v;
    }
    char *shape = shape_text(f->dtype, f->rank, f->shape);
    printf("  %s.%s %s min %g max %g mean %.6f first %g\n", s->name, f->name, shape, lo, hi, sum / (double)n,
           f->u8 ? f->u8[0] / 255.0 : f->dtype == DT_F32 ? ((float *)f->data)[0] : ((int32_t *)f->data)[0]);
    free(shape);
}

static void data(const char *source, const char *dir, const char *context) {
    char *text = xsprintf("mdl-manifest 1\nmodule t\nhash 0\ndata %s path=%s%s%s\n", source, dir, context ? " context=" : "",
                          context ? context : "");
    manifest_t *m = manifest_parse(text);
    dataset_t *ds = data_load(m, NULL);
    for (int i = 0; i < ds->n_splits; i++) {
        const split_t *s = &ds->splits[i];
        printf("%s %s: %lld examples\n", source, s->name, (long long)s->n);
        for (int k = 0; k < s->n_fields; k++) field_stats(s, &s->fields[k]);
        if (s->g) {
            int64_t rows[3] = {0, 1, s->n - 1};
            batch_t b = {0};
            batch_gather(s, rows, 3, &b);
            printf("  graphs 0, 1, last: y %d %d %d, N %lld, E %lld, first edge %d->%d, last graph id %d\n",
                   ((int32_t *)b.arrays[4].data)[0], ((int32_t *)b.arrays[4].data)[1], ((int32_t *)b.arrays[4].data)[2],
                   (long long)b.arrays[0].shape[0], (long long)b.arrays[1].shape[0], ((int32_t *)b.arrays[1].data)[0],
                   ((int32_t *)b.arrays[2].data)[0], ((int32_t *)b.arrays[3].data)[b.arrays[3].shape[0] - 1]);
            batch_free(&b);
        }
    }
    if (ds->holdout) {
        view_t tr = data_view(ds, "train", 0, -1, 0), te = data_view(ds, "test", 0, -1, 0);
        printf("holdout: %lld train, %lld test (first test row %lld)\n", (long long)tr.n, (long long)te.n, (long long)te.rows[0]);
    }
    free(text);
}

/* Every path of mdl_sgemm (whole, bands, k slices; transposes, beta 0 and 1, ldc > n) against
 * a double-precision product, within float rounding of the sum of |terms|; then again on 2
 * threads, which must give the same bytes. */
static void gemm(void) {
    struct {
        int ta, tb;
        int64_t m, n, k;
    } shapes[] = {{0, 0, 64, 48, 4096}, {1, 0, 128, 96, 3000}, {0, 1, 17, 33, 2500}, {1, 1, 40, 8, 2048},
                  {0, 0, 300, 200, 100}, {1, 1, 150, 400, 64}, {0, 1, 1, 1, 4096},
                  /* where a 16-row band split used to cut OpenBLAS's 12-row tiles on Zen 3, and a wide product */
                  {0, 0, 2048, 128, 128}, {0, 1, 64, 2000, 128}};
    enum { N_SHAPES = sizeof shapes / sizeof *shapes };
    float *results[2][N_SHAPES][2];
    double worst = 0;
    for (int run = 0; run < 2; run++) {
        threads_init(run + 1);
        for (int i = 0; i < N_SHAPES; i++) {
            int64_t m = shapes[i].m, n = shapes[i].n, k = shapes[i].k, ldc = n + 3;
            float *a = xmalloc(sizeof(float) * (size_t)(m * k)), *b = xmalloc(sizeof(float) * (size_t)(k * n));
            for (int64_t j = 0; j < m * k; j++) a[j] = (float)(2 * mdl_rng_uniform(1, i, j) - 1);
            for (int64_t j = 0; j < k * n; j++) b[j] = (float)(2 * mdl_rng_uniform(2, i, j) - 1);
            for (int beta = 0; beta < 2; beta++) {
                float *c = xmalloc(sizeof(float) * (size_t)(m * ldc));
                for (int64_t j = 0; j < m * ldc; j++) c[j] = (float)(2 * mdl_rng_uniform(3, i, j) - 1);
                float *before = xmalloc(sizeof(float) * (size_t)(m * ldc));
                memcpy(before, c, sizeof(float) * (size_t)(m * ldc));
                mdl_sgemm(shapes[i].ta, shapes[i].tb, m, n, k, a, shapes[i].ta ? m : k, b, shapes[i].tb ? k : n, (float)beta, c, ldc);
                for (int64_t r = 0; r < m; r++)
                    for (int64_t col = 0; col < ldc; col++) {
                        if (col >= n) {
                            expect(c[r * ldc + col] == before[r * ldc + col], "mdl_sgemm leaves the elements past n alone");
                            continue;
                        }
                        double sum = beta * (double)before[r * ldc + col], size = fabs(sum);
                        for (int64_t q = 0; q < k; q++) {
                            double term = (double)a[shapes[i].ta ? q * m + r : r * k + q] * b[shapes[i].tb ? col * k + q : q * n + col];
                            sum += term;
                            size += fabs(term);
                        }
                        double error = fabs(c[r * ldc + col] - sum) / size;
                        if (error > worst) worst = error;
                    }
                results[run][i][beta] = c;
                free(before);
            }
            free(a);
            free(b);
        }
    }
    expect(worst < 1e-6, "mdl_sgemm within float rounding of the exact product");
    bool same = true;
    for (int i = 0; i < N_SHAPES; i++)
        for (int beta = 0; beta < 2; beta++)
            same &= memcmp(results[0][i][beta], results[1][i][beta], sizeof(float) * (size_t)(shapes[i].m * (shapes[i].n + 3))) == 0;
    expect(same, "mdl_sgemm gives the same bytes on 1 and 2 threads");
    printf("gemm: %d products, worst error %.2g of the sum of |terms|, 1 and 2 threads %s\n", 2 * N_SHAPES, worst, same ? "agree" : "DIFFER");
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "rng") == 0)
        rng();
    else if (argc == 4 && strcmp(argv[1], "gunzip") == 0)
        gunzip_check(argv[2], argv[3]);
    else if (argc >= 2 && strcmp(argv[1], "json") == 0)
        json();
    else if (argc >= 2 && strcmp(argv[1], "gemm") == 0)
        gemm();
    else if (argc >= 4 && strcmp(argv[1], "data") == 0)
        data(argv[2], argv[3], argc > 4 ? argv[4] : NULL);
    else {
        fprintf(stderr, "usage: internals rng | gunzip FILE.gz FILE | json | gemm | data SOURCE DIR [CONTEXT]\n");
        return 2;
    }
    return failures ? 1 : 0;
}
