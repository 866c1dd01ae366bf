/* A gzip (RFC 1952) / deflate (RFC 1951) decoder, so .gz datasets load without zlib. It
 * follows the structure of zlib's reference decoder "puff": canonical Huffman codes decoded
 * bit by bit, which is fast enough for data sets read once per run. */
#include "internal.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

static uint32_t crc_table[256];

uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    if (!crc_table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#define MAXBITS 15

typedef struct {
    const uint8_t *in;
    size_t n, pos;
    uint32_t bitbuf;
    int bitcnt;
    uint8_t *out;
    size_t len, cap;
    const char *error;
    jmp_buf fail;
} state;

typedef struct {
    short count[MAXBITS + 1]; /* codes of each length */
    short symbol[320];        /* symbols ordered by code */
} huffman;

static _Noreturn void fail(state *s, const char *why) {
    s->error = why;
    longjmp(s->fail, 1);
}

static int bits(state *s, int need) {
    uint32_t val = s->bitbuf;
    while (s->bitcnt < need) {
        if (s->pos >= s->n) fail(s, "the compressed data end early");
        val |= (uint32_t)s->in[s->pos++] << s->bitcnt;
        s->bitcnt += 8;
    }
    s->bitbuf = val >> need;
    s->bitcnt -= need;
    return (int)(val & ((1u << need) - 1));
}

static void put(state *s, uint8_t byte) {
    if (s->len == s->cap) {
        if (s->cap > SIZE_MAX / 2) fail(s, "the data are too large");
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->out = xrealloc(s->out, s->cap);
    }
    s->out[s->len++] = byte;
}

static void stored(state *s) {
    s->bitbuf = 0; /* a stored block starts at a byte boundary */
    s->bitcnt = 0;
    if (s->pos + 4 > s->n) fail(s, "the compressed data end early");
    unsigned len = s->in[s->pos] | s->in[s->pos + 1] << 8;
    unsigned nlen = s->in[s->pos + 2] | s->in[s->pos + 3] << 8;
    s->pos += 4;
    if (len != (~nlen & 0xffff)) fail(s, "a stored block's length check fails");
    if (s->pos + len > s->n) fail(s, "the compressed data end early");
    for (unsigned i = 0; i < len; i++) put(s, s->in[s->pos + i]);
    s->pos += len;
}

static int decode(state *s, const huffman *h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= MAXBITS; len++) {
        code |= bits(s, 1);
        int count = h->count[len];
        if (code - count < first) return h->symbol[index + (code - first)];
        index += count;
        first += count;
        first <<= 1;
        code <<= 1;
    }
    fail(s, "an invalid Huffman code");
}

/* Builds a canonical code from code lengths; incomplete codes are allowed (a single distance
 * code is legal), over-subscribed ones are not. */
static void construct(state *s, huffman *h, const short *length, int n) {
    memset(h->count, 0, sizeof h->count);
    for (int i = 0; i < n; i++) h->count[length[i]]++;
    if (h->count[0] == n) return;
    int left = 1;
    for (int len = 1; len <= MAXBITS; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0) fail(s, "an over-subscribed Huffman code");
    }
    short offs[MAXBITS + 1];
    offs[1] = 0;
    for (int len = 1; len < MAXBITS; len++) offs[len + 1] = (short)(offs[len] + h->count[len]);
    for (int i = 0; i < n; i++)
        if (length[i]) h->symbol[offs[length[i]]++] = (short)i;
}

static const short len_base[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                   35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const short len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const short dist_base[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129,
                                    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const short dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void codes(state *s, const huffman *lencode, const huffman *distcode) {
    for (;;) {
        int symbol = decode(s, lencode);
        if (symbol < 256) {
            put(s, (uint8_t)symbol);
        } else if (symbol == 256) {
            return;
        } else {
            symbol -= 257;
            if (symbol >= 29) fail(s, "an invalid length code");
            size_t len = (size_t)(len_base[symbol] + bits(s, len_extra[symbol]));
            int d = decode(s, distcode);
            if (d >= 30) fail(s, "an invalid distance code");
            size_t dist = (size_t)(dist_base[d] + bits(s, dist_extra[d]));
            if (dist > s->len) fail(s, "a distance reaches before the start of the data");
            for (size_t i = 0; i < len; i++) put(s, s->out[s->len - dist]);
        }
    }
}

static void fixed(state *s) {
    huffman lencode, distcode;
    short lengths[288];
    int i = 0;
    for (; i < 144; i++) lengths[i] = 8;
    for (; i < 256; i++) lengths[i] = 9;
    for (; i < 280; i++) lengths[i] = 7;
    for (; i < 288; i++) lengths[i] = 8;
    construct(s, &lencode, lengths, 288);
    for (i = 0; i < 30; i++) lengths[i] = 5;
    construct(s, &distcode, lengths, 30);
    codes(s, &lencode, &distcode);
}

static void dynamic(state *s) {
    static const short order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    short lengths[320];
    huffman lencode, distcode;
    int nlen = bits(s, 5) + 257, ndist = bits(s, 5) + 1, ncode = bits(s, 4) + 4;
    if (nlen > 286 || ndist > 30) fail(s, "bad code counts in a dynamic block");
    int i = 0;
    for (; i < ncode; i++) lengths[order[i]] = (short)bits(s, 3);
    for (; i < 19; i++) lengths[order[i]] = 0;
    construct(s, &lencode, lengths, 19);
    for (i = 0; i < nlen + ndist;) {
        int symbol = decode(s, &lencode);
        if (symbol < 16) {
            lengths[i++] = (short)symbol;
            continue;
        }
        int len = 0, repeat;
        if (symbol == 16) {
            if (i == 0) fail(s, "a repeat with no previous length");
            len = lengths[i - 1];
            repeat = 3 + bits(s, 2);
        } else if (symbol == 17) {
            repeat = 3 + bits(s, 3);
        } else {
            repeat = 11 + bits(s, 7);
        }
        if (i + repeat > nlen + ndist) fail(s, "too many code lengths");
        while (repeat--) lengths[i++] = (short)len;
    }
    if (lengths[256] == 0) fail(s, "no end-of-block code");
    construct(s, &lencode, lengths, nlen);
    construct(s, &distcode, lengths + nlen, ndist);
    codes(s, &lencode, &distcode);
}

static void inflate_stream(state *s) {
    int last;
    do {
        last = bits(s, 1);
        int type = bits(s, 2);
        if (type == 0)
            stored(s);
        else if (type == 1)
            fixed(s);
        else if (type == 2)
            dynamic(s);
        else
            fail(s, "an invalid block type");
    } while (!last);
    s->bitbuf = 0; /* the trailer starts at the next byte */
    s->bitcnt = 0;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

uint8_t *gunzip(const uint8_t *in, size_t n, size_t *out_len, const char *path) {
    state *s = xcalloc(1, sizeof *s);
    s->in = in;
    s->n = n;
    if (setjmp(s->fail)) die("'%s': corrupt gzip data: %s", path, s->error);
    /* A file may hold several gzip members; their contents are concatenated. */
    while (s->pos < n) {
        size_t start = s->len;
        if (n - s->pos < 18) fail(s, "a gzip member is shorter than its header and trailer");
        const uint8_t *h = in + s->pos;
        if (h[0] != 0x1f || h[1] != 0x8b) fail(s, "data after the last gzip member");
        if (h[2] != 8) fail(s, "an unknown compression method");
        int flags = h[3];
        s->pos += 10;
        if (flags & 4) { /* FEXTRA */
            if (s->pos + 2 > n) fail(s, "the header ends early");
            s->pos += 2 + (size_t)(in[s->pos] | in[s->pos + 1] << 8);
        }
        for (int field = 8; field <= 16; field *= 2) { /* FNAME, FCOMMENT: zero-terminated */
            if (!(flags & field)) continue;
            while (s->pos < n && in[s->pos]) s->pos++;
            s->pos++;
        }
        if (flags & 2) s->pos += 2; /* FHCRC */
        if (s->pos > n) fail(s, "the header ends early");
        inflate_stream(s);
        if (s->pos + 8 > n) fail(s, "the trailer is missing");
        if (le32(in + s->pos) != crc32_update(0, s->out + start, s->len - start)) fail(s, "the CRC-32 check fails");
        if (le32(in + s->pos + 4) != (uint32_t)(s->len - start)) fail(s, "the length check fails");
        s->pos += 8;
    }
    uint8_t *out = s->out ? s->out : xmalloc(1);
    *out_len = s->len;
    free(s);
    return out;
}
