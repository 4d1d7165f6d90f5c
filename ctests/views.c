/*
 * Proves: m2c_conv_view / m2c_ssm_view describe each layer's storage with
 * the documented ndim, shape, element strides (unused dims: shape 1,
 * stride 0), dtype, device, 64-byte alignment, and disjoint per-layer
 * buffers; writing through a view is what m2c_read_* returns, and what
 * m2c_update_* / m2c_set_conv write is what the view shows; a layer out of
 * range is OUT_OF_RANGE with *out untouched.
 */
#include "common.h"

static void check_views(uint32_t width, m2c_dtype cdt, m2c_dtype sdt) {
    m2c_config c = small_config(width, cdt, sdt);
    c.num_layers = 3;
    c.num_slots = 5;
    m2c_cache *cache = create_or_die(&c);
    const uint64_t dim = conv_dim_of(&c);
    uintptr_t starts[6], ends[6];

    for (uint32_t l = 0; l < c.num_layers; l++) {
        m2c_tensor cv, sv;
        EXPECT_OK(m2c_conv_view(cache, l, &cv));
        EXPECT_OK(m2c_ssm_view(cache, l, &sv));

        CHECK(cv.ndim == 3);
        CHECK(cv.dtype == cdt);
        CHECK(cv.device == M2C_DEVICE_CPU && cv.device_index == 0);
        CHECK(cv.shape[0] == c.num_slots && cv.shape[1] == dim && cv.shape[2] == width);
        CHECK(cv.shape[3] == 1 && cv.strides[3] == 0);
        CHECK(cv.strides[0] == dim * width && cv.strides[1] == width && cv.strides[2] == 1);
        CHECK(cv.data != NULL && (uintptr_t)cv.data % 64 == 0);

        CHECK(sv.ndim == 4);
        CHECK(sv.dtype == sdt);
        CHECK(sv.device == M2C_DEVICE_CPU && sv.device_index == 0);
        CHECK(sv.shape[0] == c.num_slots && sv.shape[1] == c.num_heads &&
              sv.shape[2] == c.head_dim && sv.shape[3] == c.state_size);
        CHECK(sv.strides[0] == (uint64_t)c.num_heads * c.head_dim * c.state_size);
        CHECK(sv.strides[1] == (uint64_t)c.head_dim * c.state_size);
        CHECK(sv.strides[2] == c.state_size && sv.strides[3] == 1);
        CHECK(sv.data != NULL && (uintptr_t)sv.data % 64 == 0);

        /* The same pointer every time. */
        m2c_tensor again;
        EXPECT_OK(m2c_conv_view(cache, l, &again));
        CHECK(again.data == cv.data);

        starts[2 * l] = (uintptr_t)cv.data;
        ends[2 * l] = starts[2 * l] + view_bytes(&cv);
        starts[2 * l + 1] = (uintptr_t)sv.data;
        ends[2 * l + 1] = starts[2 * l + 1] + view_bytes(&sv);
    }
    /* No two buffers overlap. */
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < i; j++) CHECK(ends[i] <= starts[j] || ends[j] <= starts[i]);

    /* Write through the ssm view of layer 1, element [s][h][p][n] =
     * test_value(s, h*.. ) computed from the strides; read it back. */
    m2c_tensor sv;
    EXPECT_OK(m2c_ssm_view(cache, 1, &sv));
    for (uint64_t s = 0; s < sv.shape[0]; s++)
        for (uint64_t h = 0; h < sv.shape[1]; h++)
            for (uint64_t p = 0; p < sv.shape[2]; p++)
                for (uint64_t n = 0; n < sv.shape[3]; n++) {
                    uint64_t off = s * sv.strides[0] + h * sv.strides[1] + p * sv.strides[2] +
                                   n * sv.strides[3];
                    store_elem(sv.data, sdt, off, test_value((uint32_t)s, h * 100 + p * 10 + n));
                }
    const size_t sper = ssm_slot_elems(&c);
    float *got = (float *)alloc_elems(M2C_DTYPE_F32, sper);
    for (int32_t s = 0; s < (int32_t)c.num_slots; s++) {
        EXPECT_OK(m2c_read_ssm(cache, 1, &s, 1, got, M2C_DTYPE_F32, sper));
        size_t i = 0; /* row-major [h][p][n] in the read buffer */
        for (uint32_t h = 0; h < c.num_heads; h++)
            for (uint32_t p = 0; p < c.head_dim; p++)
                for (uint32_t n = 0; n < c.state_size; n++, i++)
                    CHECK(got[i] == test_value((uint32_t)s, h * 100u + p * 10u + n));
    }
    free(got);
    /* Layers 0 and 2 did not see it. */
    float *zero = (float *)alloc_elems(M2C_DTYPE_F32, c.num_slots * sper);
    EXPECT_OK(m2c_read_ssm(cache, 0, NULL, c.num_slots, zero, M2C_DTYPE_F32, c.num_slots * sper));
    for (size_t i = 0; i < c.num_slots * sper; i++) CHECK(zero[i] == 0.0f);
    EXPECT_OK(m2c_read_ssm(cache, 2, NULL, c.num_slots, zero, M2C_DTYPE_F32, c.num_slots * sper));
    for (size_t i = 0; i < c.num_slots * sper; i++) CHECK(zero[i] == 0.0f);
    free(zero);

    /* Write through the conv view of layer 2: [slot][chan][col]. */
    m2c_tensor cv;
    EXPECT_OK(m2c_conv_view(cache, 2, &cv));
    const int32_t s3 = 3;
    for (uint64_t ch = 0; ch < cv.shape[1]; ch++)
        for (uint64_t col = 0; col < cv.shape[2]; col++)
            store_elem(cv.data, cdt, 3 * cv.strides[0] + ch * cv.strides[1] + col * cv.strides[2],
                       test_value(9, ch * 8 + col));
    const size_t cper = conv_slot_elems(&c);
    float *w = (float *)alloc_elems(M2C_DTYPE_F32, cper);
    EXPECT_OK(m2c_read_conv(cache, 2, &s3, 1, w, M2C_DTYPE_F32, cper));
    for (size_t ch = 0; ch < dim; ch++)
        for (size_t col = 0; col < width; col++) CHECK(w[ch * width + col] == test_value(9, ch * 8 + col));

    /* And the other way: an update shows in the view. */
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, dim);
    fill_values(x, M2C_DTYPE_F32, dim, 12);
    EXPECT_OK(m2c_update_conv(cache, 2, &s3, 1, x, M2C_DTYPE_F32, dim));
    for (size_t ch = 0; ch < dim; ch++) {
        const size_t base = 3 * cv.strides[0] + ch * cv.strides[1];
        CHECK(load_elem(cv.data, cdt, base + (width - 1)) == test_value(12, ch));
        CHECK(load_elem(cv.data, cdt, base + 0) == test_value(9, ch * 8 + 1));
    }
    free(x);
    free(w);

    /* Out of range. */
    m2c_tensor t, t0;
    memset(&t, 0x5A, sizeof t);
    t0 = t;
    EXPECT_FAIL(m2c_conv_view(cache, c.num_layers, &t), M2C_STATUS_OUT_OF_RANGE, "m2c_conv_view",
                "layer");
    EXPECT_FAIL(m2c_ssm_view(cache, c.num_layers, &t), M2C_STATUS_OUT_OF_RANGE, "m2c_ssm_view",
                "layer");
    CHECK(memcmp(&t, &t0, sizeof t) == 0);
    m2c_destroy(cache);
}

int main(void) {
    for (int w = 3; w <= 4; w++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) check_views((uint32_t)w, ALL_DTYPES[a], ALL_DTYPES[b]);
    printf("views: ok\n");
    return 0;
}
