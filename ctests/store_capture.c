/*
 * Proves, through the C ABI: checkpoints declared with m2c_capture_begin and
 * taken inside chunked m2c_conv_prefill / m2c_ssm_prefill calls (a batch of
 * slot 1, a padding row and slot 2, chunks of 5 + 4 tokens, points at 3, 5
 * and 7 tokens: inside a chunk, at its end, across chunks) and put into a
 * store by m2c_capture_end are, bit for bit, the states (and positions) of
 * caches that prefilled only those prefixes; the prefill outputs are those
 * of the same calls without a capture; an unreached point, a wrong count,
 * a zero token count and NULL arguments are refused with their statuses.
 */
#include "kernels.h"

#include <string.h>

enum { LAYERS = 2, CHUNK1 = 5, CHUNK2 = 4, TOKENS = CHUNK1 + CHUNK2 };

typedef struct inputs {
    float *x, *sx, *dt, *bc; /* per token: conv_dim, H*P, H, 2*G*N */
    float *w, *A;
} inputs;

static inputs make_inputs(const m2c_config *c, uint64_t seed) {
    rng r = rng_seeded(seed);
    const size_t dim = conv_dim_of(c), hp = (size_t)c->num_heads * c->head_dim, gn = (size_t)c->n_groups * c->state_size;
    inputs in;
    in.x = random_floats(TOKENS * dim, &r, -1.0f, 1.0f);
    in.sx = random_floats(TOKENS * hp, &r, -1.0f, 1.0f);
    in.dt = random_floats(TOKENS * c->num_heads, &r, -1.0f, 1.0f);
    in.bc = random_floats(TOKENS * 2 * gn, &r, -1.0f, 1.0f);
    in.w = random_floats(dim * c->conv_kernel_size, &r, -0.5f, 0.5f);
    in.A = random_floats(c->num_heads, &r, -1.0f, -0.1f);
    return in;
}

/* One prefill call on layer l: each listed slot brings tokens [a, b) of
 * the layer's inputs (the same prompt for every slot, a padding row too).
 * The outputs' bytes are appended to out (conv, then y). */
static void prefill(m2c_cache *cache, const m2c_config *c, uint32_t l, const inputs *in, const int32_t *slots,
                    size_t n, size_t a, size_t b, float *out) {
    const size_t dim = conv_dim_of(c), hp = (size_t)c->num_heads * c->head_dim, gn = (size_t)c->n_groups * c->state_size;
    const size_t len = b - a, t = n * len;
    uint64_t cu[4] = {0};
    float *x = malloc(t * dim * 4), *sx = malloc(t * hp * 4), *dt = malloc(t * c->num_heads * 4);
    float *bb = malloc(t * gn * 4), *cc = malloc(t * gn * 4);
    for (size_t i = 0; i < n; i++) {
        cu[i + 1] = cu[i] + len;
        memcpy(x + i * len * dim, in->x + a * dim, len * dim * 4);
        memcpy(sx + i * len * hp, in->sx + a * hp, len * hp * 4);
        memcpy(dt + i * len * c->num_heads, in->dt + a * c->num_heads, len * c->num_heads * 4);
        for (size_t k = 0; k < len; k++) {
            memcpy(bb + (i * len + k) * gn, in->bc + (a + k) * 2 * gn, gn * 4);
            memcpy(cc + (i * len + k) * gn, in->bc + (a + k) * 2 * gn + gn, gn * 4);
        }
    }
    m2c_conv_args ca;
    m2c_conv_args_init(&ca);
    ca.weight = in->w;
    ca.weight_len = dim * c->conv_kernel_size;
    EXPECT_OK(m2c_conv_prefill(cache, l, slots, n, cu, n + 1, x, t * dim, out, t * dim, &ca));
    m2c_ssm_args sa;
    m2c_ssm_args_init(&sa);
    sa.A = in->A;
    sa.A_len = c->num_heads;
    m2c_ssm_io io;
    m2c_ssm_io_init(&io);
    io.x = sx;
    io.x_len = t * hp;
    io.dt = dt;
    io.dt_len = t * c->num_heads;
    io.B = bb;
    io.B_len = t * gn;
    io.C = cc;
    io.C_len = t * gn;
    io.y = out + t * dim;
    io.y_len = t * hp;
    EXPECT_OK(m2c_ssm_prefill(cache, l, slots, n, cu, n + 1, &io, &sa));
    free(x);
    free(sx);
    free(dt);
    free(bb);
    free(cc);
}

int main(void) {
    m2c_config c = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    const size_t dim = conv_dim_of(&c), hp = (size_t)c.num_heads * c.head_dim;
    inputs in[LAYERS];
    for (uint32_t l = 0; l < LAYERS; l++) in[l] = make_inputs(&c, 40 + l);
    m2c_cache *a = create_or_die(&c), *plain = create_or_die(&c);
    fill_cache(a, 9);
    fill_cache(plain, 9);

    m2c_store_config sc;
    m2c_store_config_init(&sc);
    m2c_store *store = NULL;
    EXPECT_OK(m2c_store_create(&sc, &store));
    const int32_t slot_toks[3][2] = {{1, 3}, {1, 5}, {2, 7}};
    m2c_capture_point pts[3];
    for (int i = 0; i < 3; i++) {
        pts[i].slot = slot_toks[i][0];
        pts[i].tokens = (uint64_t)slot_toks[i][1];
        EXPECT_OK(m2c_key_chain(NULL, slot_toks[i], 2, &pts[i].key));
    }
    m2c_capture_point bad = pts[0];
    bad.tokens = 0;
    EXPECT_FAIL(m2c_capture_begin(a, store, &bad, 1), M2C_STATUS_INVALID_ARG, "m2c_capture_begin", "tokens");
    EXPECT_FAIL(m2c_capture_begin(a, store, NULL, 2), M2C_STATUS_NULL_ARG, "m2c_capture_begin", "points");
    EXPECT_FAIL(m2c_capture_begin(a, NULL, pts, 3), M2C_STATUS_NULL_ARG, "m2c_capture_begin", "store");
    EXPECT_OK(m2c_capture_begin(a, store, pts, 3));

    const int32_t rows[3] = {1, -1, 2};
    const size_t per_call = 3 * CHUNK1 * (dim + hp);
    float *o1 = malloc(per_call * 4), *o2 = malloc(per_call * 4);
    for (uint32_t l = 0; l < LAYERS; l++) {
        prefill(a, &c, l, &in[l], rows, 3, 0, CHUNK1, o1);
        prefill(plain, &c, l, &in[l], rows, 3, 0, CHUNK1, o2);
        if (memcmp(o1, o2, per_call * 4) != 0) {
            fprintf(stderr, "layer %u: outputs differ under a capture\n", l);
            return 1;
        }
    }
    m2c_miss misses[3] = {-1, -1, -1};
    EXPECT_FAIL(m2c_capture_end(a, store, misses, 3), M2C_STATUS_INVALID_ARG, "m2c_capture_end", "points[2]");
    EXPECT_FAIL(m2c_capture_end(a, store, misses, 2), M2C_STATUS_SHAPE_MISMATCH, "m2c_capture_end", "3 points");
    EXPECT_FAIL(m2c_capture_end(a, NULL, misses, 3), M2C_STATUS_NULL_ARG, "m2c_capture_end", "store");
    for (uint32_t l = 0; l < LAYERS; l++) {
        prefill(a, &c, l, &in[l], rows, 3, CHUNK1, TOKENS, o1);
        prefill(plain, &c, l, &in[l], rows, 3, CHUNK1, TOKENS, o2);
        if (memcmp(o1, o2, 3 * CHUNK2 * (dim + hp) * 4) != 0) {
            fprintf(stderr, "layer %u, second chunk: outputs differ under a capture\n", l);
            return 1;
        }
    }
    EXPECT_OK(m2c_capture_end(a, store, misses, 3));
    for (int i = 0; i < 3; i++) {
        if (misses[i] != M2C_MISS_NONE) {
            fprintf(stderr, "point %d: miss %d\n", i, misses[i]);
            return 1;
        }
    }
    EXPECT_OK(m2c_capture_end(a, store, NULL, 0)); /* nothing declared: nothing to do */

    /* Each point against a cache that prefilled only the prefix. */
    for (int i = 0; i < 3; i++) {
        m2c_cache *ref = create_or_die(&c);
        fill_cache(ref, 9);
        const int32_t s = pts[i].slot;
        float *o = malloc(pts[i].tokens * (dim + hp) * 4);
        for (uint32_t l = 0; l < LAYERS; l++) prefill(ref, &c, l, &in[l], &s, 1, 0, pts[i].tokens, o);
        free(o);
        EXPECT_OK(m2c_advance(ref, &s, 1, (uint32_t)pts[i].tokens));
        EXPECT_OK(m2c_store_restore(store, &pts[i].key, a, 3));
        snapshot got = take_snapshot(a), want = take_snapshot(ref);
        if (!slots_equal(&c, &got, 3, &want, (size_t)s)) {
            fprintf(stderr, "point %d (slot %d after %llu tokens) differs from its prefix state\n", i, s,
                    (unsigned long long)pts[i].tokens);
            return 1;
        }
        free_snapshot(&got);
        free_snapshot(&want);
        m2c_destroy(ref);
    }
    free(o1);
    free(o2);
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(in[l].x);
        free(in[l].sx);
        free(in[l].dt);
        free(in[l].bc);
        free(in[l].w);
        free(in[l].A);
    }
    m2c_store_destroy(store);
    m2c_destroy(plain);
    m2c_destroy(a);
    return 0;
}
