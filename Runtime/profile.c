/* --profile: wall time per kernel call site, and the time its GEMMs took, printed at exit.
 * Generated code calls mdl_profile_start before each kernel and passes the start time to
 * mdl_profile_record after it (both no-ops unless profiling); mdl_sgemm adds the time of
 * the products it runs for the calling thread. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int32_t mdl_profiling;

typedef struct {
    const char *name, *text; /* the kernel (<function>.k<n>.<ops>) and its Graph IR op */
    int64_t calls;
    double seconds, gemm_seconds;
} site_t;

static struct {
    site_t *slots; /* open addressing on the name pointer: one static string per call site */
    size_t capacity, used;
    double gemm_pending; /* GEMM seconds of the kernel now running */
    double wall_start;
} prof;

int64_t mdl_profile_start(void) {
    if (!mdl_profiling) return 0;
    prof.gemm_pending = 0;
    return (int64_t)(now_seconds() * 1e9);
}

void profile_gemm(double seconds) { prof.gemm_pending += seconds; }

static site_t *site(const char *name) {
    if (2 * (prof.used + 1) > prof.capacity) {
        site_t *old = prof.slots;
        size_t old_capacity = prof.capacity;
        prof.capacity = old_capacity ? 2 * old_capacity : 1024;
        prof.slots = xcalloc(prof.capacity, sizeof(site_t));
        prof.used = 0;
        for (size_t i = 0; i < old_capacity; i++)
            if (old[i].name) *site(old[i].name) = old[i];
        free(old);
    }
    size_t i = ((uintptr_t)name >> 4) * 11400714819323198485ull % prof.capacity;
    while (prof.slots[i].name && prof.slots[i].name != name) i = (i + 1) % prof.capacity;
    if (!prof.slots[i].name) {
        prof.slots[i].name = name;
        prof.used++;
    }
    return &prof.slots[i];
}

void mdl_profile_record(const char *name, const char *text, int64_t start) {
    double seconds = now_seconds() - (double)start * 1e-9;
    site_t *s = site(name);
    s->text = text;
    s->calls++;
    s->seconds += seconds;
    s->gemm_seconds += prof.gemm_pending;
}

void profile_reset(void) {
    if (prof.slots) memset(prof.slots, 0, prof.capacity * sizeof(site_t));
    prof.used = 0;
    prof.wall_start = now_seconds();
}

static int by_time(const void *a, const void *b) {
    double x = ((const site_t *)a)->seconds, y = ((const site_t *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The ops part of a kernel name: "step0.k12.fused3.add" -> "fused3.add". */
static const char *ops_of(const char *name) {
    const char *k = strstr(name, ".k");
    while (k && !(k[2] >= '0' && k[2] <= '9')) k = strstr(k + 1, ".k");
    const char *dot = k ? strchr(k + 2, '.') : NULL;
    return dot ? dot + 1 : name;
}

void profile_report(FILE *out, int top) {
    double wall = now_seconds() - prof.wall_start;
    site_t *all = xmalloc(sizeof(site_t) * (prof.used + 1));
    size_t n = 0;
    double kernels = 0, gemm = 0;
    for (size_t i = 0; i < prof.capacity; i++)
        if (prof.slots[i].name && prof.slots[i].calls) {
            all[n++] = prof.slots[i];
            kernels += prof.slots[i].seconds;
            gemm += prof.slots[i].gemm_seconds;
        }
    qsort(all, n, sizeof *all, by_time);
    fprintf(out, "profile: %.1f ms in %zu kernels (%.1f%% of %.1f ms wall since the profile started), %.1f ms of it in GEMM\n",
            kernels * 1e3, n, wall > 0 ? 100 * kernels / wall : 0, wall * 1e3, gemm * 1e3);
    /* By op kind: the kernels' ops, summed over call sites. */
    site_t *kinds = xcalloc(n + 1, sizeof(site_t));
    size_t nk = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ops = ops_of(all[i].name);
        size_t j = 0;
        while (j < nk && strcmp(kinds[j].name, ops) != 0) j++;
        if (j == nk) kinds[nk++].name = ops;
        kinds[j].calls += all[i].calls;
        kinds[j].seconds += all[i].seconds;
        kinds[j].gemm_seconds += all[i].gemm_seconds;
    }
    qsort(kinds, nk, sizeof *kinds, by_time);
    fprintf(out, "\n  %10s %6s %8s %10s  %s\n", "ms", "%", "calls", "GEMM ms", "ops");
    for (size_t j = 0; j < nk && (int)j < top; j++)
        fprintf(out, "  %10.3f %6.1f %8lld %10.3f  %s\n", kinds[j].seconds * 1e3, kernels > 0 ? 100 * kinds[j].seconds / kernels : 0,
                (long long)kinds[j].calls, kinds[j].gemm_seconds * 1e3, kinds[j].name);
    fprintf(out, "\n  %10s %6s %8s %10s  %s\n", "ms", "%", "calls", "GEMM ms", "kernel: op");
    for (size_t i = 0; i < n && (int)i < top; i++)
        fprintf(out, "  %10.3f %6.1f %8lld %10.3f  %s: %.100s\n", all[i].seconds * 1e3, kernels > 0 ? 100 * all[i].seconds / kernels : 0,
                (long long)all[i].calls, all[i].gemm_seconds * 1e3, all[i].name, all[i].text ? all[i].text : "");
    free(kinds);
    free(all);
}
