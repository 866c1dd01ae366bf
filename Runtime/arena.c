/* The memory arena of generated entry functions. mdlc computes, per entry function, the
 * step interval in which each temporary buffer is live; at run time, when the sizes are
 * known, mdl_arena_layout gives every buffer an offset in one block such that buffers live
 * at the same time never overlap. The layout is redone only when the sizes change (a new
 * batch size), and every function uses the same block, grown when one needs more: no
 * allocation happens in a training loop. Results get blocks of their own (mdl_result). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64

static struct {
    char *base;
    int64_t capacity;
} storage;

static int64_t aligned(int64_t bytes) { return (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; }

typedef struct {
    int64_t start, end;
} span_t;

static const int64_t *sort_sizes;
static int larger_first(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (sort_sizes[i] != sort_sizes[j]) return sort_sizes[i] > sort_sizes[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}
static int by_start(const void *a, const void *b) {
    int64_t x = ((const span_t *)a)->start, y = ((const span_t *)b)->start;
    return x < y ? -1 : x > y;
}

/* Greedy by size (as TensorFlow Lite's planner): the largest buffer first, each at the lowest
 * offset that fits between the already placed buffers whose live intervals meet its own. */
int64_t mdl_arena_layout(int64_t n, const int64_t *live, const int64_t *sizes, int64_t *offsets) {
    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)(n + 1)), *placed = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
    span_t *taken = xmalloc(sizeof(span_t) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) order[i] = i;
    sort_sizes = sizes;
    qsort(order, (size_t)n, sizeof *order, larger_first);
    int64_t total = 0, n_placed = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t b = order[k], size = aligned(sizes[b]);
        offsets[b] = 0;
        if (size == 0) continue;
        int64_t n_taken = 0;
        for (int64_t p = 0; p < n_placed; p++) {
            int64_t c = placed[p];
            if (live[2 * c] <= live[2 * b + 1] && live[2 * b] <= live[2 * c + 1])
                taken[n_taken++] = (span_t){offsets[c], offsets[c] + aligned(sizes[c])};
        }
        qsort(taken, (size_t)n_taken, sizeof *taken, by_start);
        int64_t at = 0;
        for (int64_t t = 0; t < n_taken && taken[t].start < at + size; t++)
            if (taken[t].end > at) at = taken[t].end;
        offsets[b] = at;
        if (at + size > total) total = at + size;
        placed[n_placed++] = b;
    }
    free(order);
    free(placed);
    free(taken);
    return total;
}

void *mdl_arena(mdl_arena_plan *plan) {
    if (!plan->valid || memcmp(plan->sizes, plan->planned, sizeof(int64_t) * (size_t)plan->n) != 0) {
        plan->total = mdl_arena_layout(plan->n, plan->live, plan->sizes, plan->offsets);
        memcpy(plan->planned, plan->sizes, sizeof(int64_t) * (size_t)plan->n);
        plan->valid = 1;
    }
    if (plan->total > storage.capacity) {
        free(storage.base);
        storage.base = aligned_alloc(ARENA_ALIGN, (size_t)plan->total);
        storage.capacity = storage.base ? plan->total : 0;
    }
    return storage.base ? storage.base : plan->total == 0 ? (void *)&storage : NULL;
}

int64_t arena_bytes(void) { return storage.capacity; }

/* A result is handed to the caller in its own block, which the function's next call reuses
 * (grown when it needs more), so results cost no allocation in a loop either. */
void *mdl_result(mdl_result_block *block, int64_t bytes) {
    if (bytes > block->capacity) {
        free(block->data);
        block->data = aligned_alloc(ARENA_ALIGN, (size_t)aligned(bytes));
        block->capacity = block->data ? bytes : 0;
        if (!block->data) return NULL;
    }
    return block->data ? block->data : (void *)block;
}
