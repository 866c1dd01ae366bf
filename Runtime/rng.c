/* Counter-based random numbers (docs/RUNTIME.md, "Random numbers"): every value is a pure
 * function of (key, stream, index), so runs are reproducible and independent of threading.
 * Must agree bit for bit with Sources/MDL/Interpreter/Random.swift. */
#include "internal.h"

#include <math.h>

static uint64_t mix(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t rng_bits(int32_t key, int64_t stream, int64_t index) {
    uint64_t seed = (uint64_t)(uint32_t)key << 32 | (uint64_t)(uint32_t)stream;
    return mix(mix(seed) ^ (uint64_t)index);
}

double mdl_rng_uniform(int32_t key, int64_t stream, int64_t index) {
    return (double)(rng_bits(key, stream, index) >> 40) * 0x1p-24;
}

double mdl_rng_normal(int32_t key, int64_t stream, int64_t index) {
    double u1 = mdl_rng_uniform(key, stream, 2 * index);
    double u2 = mdl_rng_uniform(key, stream, 2 * index + 1);
    return sqrt(-2 * log(1 - u1)) * cos(2 * M_PI * u2);
}

int32_t mdl_rng_fold(int32_t key, int32_t i) {
    return (int32_t)(uint32_t)(mix((uint64_t)(uint32_t)key << 32 | (uint64_t)(uint32_t)i) >> 32);
}

uint32_t fnv1a32(const char *s) {
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) h = (h ^ *p) * 16777619u;
    return h;
}
