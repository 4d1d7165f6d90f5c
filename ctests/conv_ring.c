/*
 * Proves: M2C_CONV_LAYOUT_RING (m2c_set_conv_layout) changes how the conv
 * windows are stored, not what they hold. A ring cache and an
 * oldest-first cache given the same m2c_conv_step, m2c_update_conv and
 * m2c_conv_prefill calls give bit-identical outputs, m2c_read_conv results,
 * slot snapshots and digests, for both window widths and every conv dtype;
 * a snapshot of either loads into the other. m2c_get_conv_layout reports
 * the layout; m2c_conv_view's strides and m2c_conv_heads locate every
 * input; switching back to oldest-first restores the first cache's storage
 * bytes exactly. Bad layouts, layers and output sizes are refused changing
 * nothing, and m2c_slot_regions refuses a ring cache.
 */
#include "common.h"

static m2c_conv_args conv_args(const float *w, size_t wlen, const float *b, size_t blen) {
    m2c_conv_args a;
    m2c_conv_args_init(&a);
    a.weight = w;
    a.weight_len = wlen;
    a.bias = b;
    a.bias_len = blen;
    return a;
}

static void snapshot_of(m2c_cache *cache, int32_t slot, unsigned char *buf, size_t len) {
    size_t written = 0;
    EXPECT_OK(m2c_slot_save(cache, slot, buf, len, &written));
    CHECK(written == len);
}

static void check_layout(uint32_t width, m2c_dtype cdt) {
    m2c_config c = small_config(width, cdt, M2C_DTYPE_F32);
    c.num_slots = 3;
    m2c_cache *plain = create_or_die(&c);
    m2c_cache *ring = create_or_die(&c);
    const size_t dim = conv_dim_of(&c), per = conv_slot_elems(&c);
    fill_cache(plain, 5);
    fill_cache(ring, 5);

    m2c_conv_layout l = 99;
    EXPECT_OK(m2c_get_conv_layout(ring, &l));
    CHECK(l == M2C_CONV_LAYOUT_OLDEST_FIRST);
    EXPECT_OK(m2c_set_conv_layout(ring, M2C_CONV_LAYOUT_RING));
    EXPECT_OK(m2c_get_conv_layout(ring, &l));
    CHECK(l == M2C_CONV_LAYOUT_RING);
    EXPECT_OK(m2c_set_conv_layout(ring, M2C_CONV_LAYOUT_RING)); /* no-op */

    float *w = (float *)alloc_elems(M2C_DTYPE_F32, dim * c.conv_kernel_size);
    float *b = (float *)alloc_elems(M2C_DTYPE_F32, dim);
    fill_values(w, M2C_DTYPE_F32, dim * c.conv_kernel_size, 11);
    fill_values(b, M2C_DTYPE_F32, dim, 12);
    m2c_conv_args a = conv_args(w, dim * c.conv_kernel_size, b, dim);
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, 8 * dim);
    float *o1 = (float *)alloc_elems(M2C_DTYPE_F32, 8 * dim);
    float *o2 = (float *)alloc_elems(M2C_DTYPE_F32, 8 * dim);
    const int32_t sel[3] = {2, -1, 0};
    for (uint32_t t = 0; t < 5; t++) {
        fill_values(x, M2C_DTYPE_F32, 3 * dim, 100 + t);
        EXPECT_OK(m2c_conv_step(plain, 1, sel, 3, x, 3 * dim, o1, 3 * dim, &a));
        EXPECT_OK(m2c_conv_step(ring, 1, sel, 3, x, 3 * dim, o2, 3 * dim, &a));
        CHECK(memcmp(o1, o2, 3 * dim * sizeof(float)) == 0);
    }
    fill_values(x, M2C_DTYPE_F32, dim, 7);
    EXPECT_OK(m2c_update_conv(plain, 0, &sel[2], 1, x, M2C_DTYPE_F32, dim));
    EXPECT_OK(m2c_update_conv(ring, 0, &sel[2], 1, x, M2C_DTYPE_F32, dim));
    /* A prefill of 3 + 5 tokens into slots 1 and 2. */
    const int32_t ps[2] = {1, 2};
    const uint64_t cu[3] = {0, 3, 8};
    fill_values(x, M2C_DTYPE_F32, 8 * dim, 300);
    EXPECT_OK(m2c_conv_prefill(plain, 0, ps, 2, cu, 3, x, 8 * dim, o1, 8 * dim, &a));
    EXPECT_OK(m2c_conv_prefill(ring, 0, ps, 2, cu, 3, x, 8 * dim, o2, 8 * dim, &a));
    CHECK(memcmp(o1, o2, 8 * dim * sizeof(float)) == 0);

    /* Reads, snapshots and digests agree. */
    float *r1 = (float *)alloc_elems(M2C_DTYPE_F32, 3 * per);
    float *r2 = (float *)alloc_elems(M2C_DTYPE_F32, 3 * per);
    for (uint32_t layer = 0; layer < c.num_layers; layer++) {
        EXPECT_OK(m2c_read_conv(plain, layer, NULL, 3, r1, M2C_DTYPE_F32, 3 * per));
        EXPECT_OK(m2c_read_conv(ring, layer, NULL, 3, r2, M2C_DTYPE_F32, 3 * per));
        CHECK(memcmp(r1, r2, 3 * per * sizeof(float)) == 0);
    }
    size_t snap = 0;
    EXPECT_OK(m2c_slot_snapshot_size(plain, &snap));
    unsigned char *s1 = (unsigned char *)malloc(snap), *s2 = (unsigned char *)malloc(snap);
    CHECK(s1 != NULL && s2 != NULL);
    for (int32_t s = 0; s < 3; s++) {
        snapshot_of(plain, s, s1, snap);
        snapshot_of(ring, s, s2, snap);
        CHECK(memcmp(s1, s2, snap) == 0);
        uint64_t d1 = 0, d2 = 1;
        EXPECT_OK(m2c_slot_digest(plain, s, &d1));
        EXPECT_OK(m2c_slot_digest(ring, s, &d2));
        CHECK(d1 == d2);
    }

    /* The view and the heads locate every input of layer 1. */
    m2c_tensor v;
    EXPECT_OK(m2c_conv_view(ring, 1, &v));
    CHECK(v.ndim == 3 && v.shape[1] == dim && v.shape[2] == width);
    CHECK(v.strides[0] == dim * width && v.strides[1] == 1 && v.strides[2] == dim);
    uint32_t heads[4] = {77, 77, 77, 77};
    EXPECT_OK(m2c_conv_heads(ring, 1, heads, 4));
    CHECK(heads[0] == 5 % width && heads[1] == 0 && heads[2] == 5 % width && heads[3] == 77);
    EXPECT_OK(m2c_read_conv(plain, 1, NULL, 3, r1, M2C_DTYPE_F32, 3 * per));
    for (size_t s = 0; s < 3; s++)
        for (size_t ch = 0; ch < dim; ch++)
            for (size_t k = 0; k < width; k++) {
                size_t j = (heads[s] + k) % width;
                float got = load_elem(v.data, cdt, s * v.strides[0] + ch * v.strides[1] + j * v.strides[2]);
                CHECK(f32_bits(got) == f32_bits(r1[(s * dim + ch) * width + k]));
            }
    uint32_t zero[3] = {9, 9, 9};
    EXPECT_OK(m2c_conv_heads(plain, 1, zero, 3));
    CHECK(zero[0] == 0 && zero[1] == 0 && zero[2] == 0);

    /* Bad input: refused, nothing changes. */
    snapshot before = take_snapshot(ring);
    EXPECT_FAIL(m2c_set_conv_layout(ring, 2), M2C_STATUS_INVALID_ARG, "m2c_set_conv_layout", "layout");
    EXPECT_FAIL(m2c_set_conv_layout(NULL, M2C_CONV_LAYOUT_RING), M2C_STATUS_NULL_ARG, "m2c_set_conv_layout",
                "cache");
    EXPECT_FAIL(m2c_get_conv_layout(ring, NULL), M2C_STATUS_NULL_ARG, "m2c_get_conv_layout", "out");
    heads[0] = 55;
    EXPECT_FAIL(m2c_conv_heads(ring, 1, heads, 2), M2C_STATUS_SHAPE_MISMATCH, "m2c_conv_heads", "out");
    CHECK(heads[0] == 55);
    EXPECT_FAIL(m2c_conv_heads(ring, c.num_layers, heads, 4), M2C_STATUS_OUT_OF_RANGE, "m2c_conv_heads",
                "layer");
    EXPECT_FAIL(m2c_conv_heads(ring, 0, NULL, 4), M2C_STATUS_NULL_ARG, "m2c_conv_heads", "out");
    m2c_region regions[8];
    size_t nreg = 0;
    EXPECT_FAIL(m2c_slot_regions(ring, &sel[2], 1, regions, 8, &nreg), M2C_STATUS_UNSUPPORTED,
                "m2c_slot_regions", "ring");
    EXPECT_UNCHANGED(ring, &before);
    free_snapshot(&before);

    /* Snapshots cross layouts; switching back gives the same bytes. */
    snapshot_of(plain, 2, s1, snap);
    EXPECT_OK(m2c_slot_load(ring, 1, s1, snap));
    EXPECT_OK(m2c_slot_load(plain, 1, s1, snap));
    EXPECT_OK(m2c_set_conv_layout(ring, M2C_CONV_LAYOUT_OLDEST_FIRST));
    snapshot sp = take_snapshot(plain), sr = take_snapshot(ring);
    CHECK(snapshots_equal(&sp, &sr));
    free_snapshot(&sp);
    free_snapshot(&sr);

    free(s1);
    free(s2);
    free(r1);
    free(r2);
    free(x);
    free(o1);
    free(o2);
    free(w);
    free(b);
    m2c_destroy(plain);
    m2c_destroy(ring);
}

int main(void) {
    for (uint32_t width = 3; width <= 4; width++)
        for (int d = 0; d < 3; d++) check_layout(width, ALL_DTYPES[d]);
    printf("conv_ring: ok\n");
    return 0;
}
