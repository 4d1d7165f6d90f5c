/*
 * Proves: m2c_update_conv shifts each selected slot's window left by one
 * column and appends the new input as the newest column (oldest first,
 * newest last), for conv_width = K and K-1, every storage dtype and every
 * input dtype, matching a plain C reference; other slots and layers are
 * untouched; narrowing conversions round to nearest, ties to even.
 */
#include "common.h"

enum { PUSHES = 6, ROWS = 3 };

/* The reference window of one slot: ref[c * w + j], column j = w-1 newest. */
static void ref_push(float *ref, size_t dim, size_t w, const float *x) {
    for (size_t c = 0; c < dim; c++) {
        for (size_t j = 0; j + 1 < w; j++) ref[c * w + j] = ref[c * w + j + 1];
        ref[c * w + w - 1] = x[c];
    }
}

static void check_against_reference(m2c_cache *cache, const m2c_config *c, float *refs[4]) {
    const size_t per = conv_slot_elems(c);
    float *got = (float *)alloc_elems(M2C_DTYPE_F32, 4 * per);
    EXPECT_OK(m2c_read_conv(cache, 0, NULL, 4, got, M2C_DTYPE_F32, 4 * per));
    for (size_t s = 0; s < 4; s++)
        for (size_t i = 0; i < per; i++) {
            if (got[s * per + i] != refs[s][i]) {
                fprintf(stderr, "slot %zu elem %zu (chan %zu col %zu): got %g want %g\n", s, i,
                        i / c->conv_width, i % c->conv_width, (double)got[s * per + i],
                        (double)refs[s][i]);
                exit(1);
            }
        }
    /* Layer 1 was never written. */
    EXPECT_OK(m2c_read_conv(cache, 1, NULL, 4, got, M2C_DTYPE_F32, 4 * per));
    for (size_t i = 0; i < 4 * per; i++) CHECK(got[i] == 0.0f);
    free(got);
}

static void shift_scenario(uint32_t width, m2c_dtype storage, m2c_dtype xdt) {
    m2c_config c = small_config(width, storage, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const size_t dim = conv_dim_of(&c), per = conv_slot_elems(&c);
    CHECK(dim == 16);
    float *refs[4];
    for (int s = 0; s < 4; s++) {
        refs[s] = (float *)calloc(per, sizeof(float));
        CHECK(refs[s] != NULL);
    }
    void *x = alloc_elems(xdt, ROWS * dim);
    float *xf = (float *)alloc_elems(M2C_DTYPE_F32, ROWS * dim);
    /* Rows: slot 2, padding, slot 0. */
    const int32_t slots[ROWS] = {2, -1, 0};
    for (uint32_t p = 0; p < PUSHES; p++) {
        fill_values(x, xdt, ROWS * dim, 100 + p);
        fill_values(xf, M2C_DTYPE_F32, ROWS * dim, 100 + p);
        EXPECT_OK(m2c_update_conv(cache, 0, slots, ROWS, x, xdt, ROWS * dim));
        ref_push(refs[2], dim, width, xf + 0 * dim);
        ref_push(refs[0], dim, width, xf + 2 * dim);
        check_against_reference(cache, &c, refs);
    }
    /* Dense rows: slots 0 and 1, without a list. */
    fill_values(x, xdt, 2 * dim, 999);
    fill_values(xf, M2C_DTYPE_F32, 2 * dim, 999);
    EXPECT_OK(m2c_update_conv(cache, 0, NULL, 2, x, xdt, 2 * dim));
    ref_push(refs[0], dim, width, xf);
    ref_push(refs[1], dim, width, xf + dim);
    check_against_reference(cache, &c, refs);

    /* The newest column of slot 2 is the last pushed input, exactly. */
    void *win = alloc_elems(storage, per);
    const int32_t two = 2;
    EXPECT_OK(m2c_read_conv(cache, 0, &two, 1, win, storage, per));
    for (size_t ch = 0; ch < dim; ch++)
        CHECK(load_elem(win, storage, ch * width + width - 1) ==
              test_value(100 + PUSHES - 1, ch));
    free(win);

    for (int s = 0; s < 4; s++) free(refs[s]);
    free(x);
    free(xf);
    m2c_destroy(cache);
}

/* Pushes f32 value v into every channel of slot 0 and returns what the
 * newest column holds afterwards, read back as f32. */
static float push_and_read_newest(m2c_dtype storage, float v) {
    m2c_config c = small_config(3, storage, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const size_t dim = conv_dim_of(&c), per = conv_slot_elems(&c);
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, dim);
    for (size_t i = 0; i < dim; i++) x[i] = v;
    EXPECT_OK(m2c_update_conv(cache, 0, NULL, 1, x, M2C_DTYPE_F32, dim));
    float *w = (float *)alloc_elems(M2C_DTYPE_F32, per);
    EXPECT_OK(m2c_read_conv(cache, 0, NULL, 1, w, M2C_DTYPE_F32, per));
    float newest = w[c.conv_width - 1];
    for (size_t ch = 0; ch < dim; ch++) CHECK(w[ch * c.conv_width + c.conv_width - 1] == newest);
    free(x);
    free(w);
    m2c_destroy(cache);
    return newest;
}

static void rounding_scenario(void) {
    const float one = 1.0f;
    /* bf16 has 7 explicit mantissa bits: 1 + 2^-8 is halfway between 1 and
     * 1 + 2^-7, and ties go to the even mantissa (1.0). */
    CHECK(push_and_read_newest(M2C_DTYPE_BF16, one + 0x1p-8f) == 1.0f);
    /* Just above halfway rounds up. */
    CHECK(push_and_read_newest(M2C_DTYPE_BF16, f32_from_bits(f32_bits(one + 0x1p-8f) + 1)) ==
          one + 0x1p-7f);
    /* 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up. */
    CHECK(push_and_read_newest(M2C_DTYPE_BF16, one + 0x3p-8f) == one + 0x1p-6f);
    CHECK(push_and_read_newest(M2C_DTYPE_BF16, -(one + 0x1p-8f)) == -1.0f);
    /* f16 has 10: the same at 2^-11. */
    CHECK(push_and_read_newest(M2C_DTYPE_F16, one + 0x1p-11f) == 1.0f);
    CHECK(push_and_read_newest(M2C_DTYPE_F16, one + 0x3p-11f) == one + 0x1p-9f);
    /* f32 storage keeps the value exactly. */
    CHECK(push_and_read_newest(M2C_DTYPE_F32, one + 0x1p-8f) == one + 0x1p-8f);

    /* The stored bits of the halfway value are bf16 1.0 = 0x3F80. */
    m2c_config c = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const size_t dim = conv_dim_of(&c), per = conv_slot_elems(&c);
    float *x = (float *)alloc_elems(M2C_DTYPE_F32, dim);
    for (size_t i = 0; i < dim; i++) x[i] = one + 0x1p-8f;
    EXPECT_OK(m2c_update_conv(cache, 1, NULL, 1, x, M2C_DTYPE_F32, dim));
    uint16_t *w = (uint16_t *)alloc_elems(M2C_DTYPE_BF16, per);
    EXPECT_OK(m2c_read_conv(cache, 1, NULL, 1, w, M2C_DTYPE_BF16, per));
    for (size_t ch = 0; ch < dim; ch++) {
        CHECK(w[ch * 4 + 3] == 0x3F80);
        CHECK(w[ch * 4 + 0] == 0 && w[ch * 4 + 1] == 0 && w[ch * 4 + 2] == 0);
    }
    free(x);
    free(w);
    m2c_destroy(cache);
}

int main(void) {
    const uint32_t widths[2] = {4, 3}; /* K and K-1 */
    for (int w = 0; w < 2; w++)
        for (int s = 0; s < 3; s++)
            for (int x = 0; x < 3; x++) {
                fprintf(stderr, "width %u storage %s input %s\n", (unsigned)widths[w],
                        dtype_name(ALL_DTYPES[s]), dtype_name(ALL_DTYPES[x]));
                shift_scenario(widths[w], ALL_DTYPES[s], ALL_DTYPES[x]);
            }
    rounding_scenario();
    printf("update_conv: ok\n");
    return 0;
}
