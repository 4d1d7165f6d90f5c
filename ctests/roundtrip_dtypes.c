/*
 * Proves: m2c_set_conv -> m2c_read_conv and m2c_update_ssm -> m2c_read_ssm
 * return exactly what was written, for every storage dtype and every pair
 * of input and output dtypes (f32, bf16, f16), with values exact in all
 * three; a same-dtype round trip is bit-exact.
 */
#include "common.h"

static void expect_values(const void *buf, m2c_dtype d, size_t n, uint32_t seed,
                          const char *what) {
    for (size_t i = 0; i < n; i++) {
        float got = load_elem(buf, d, i), want = test_value(seed, i);
        if (got != want) {
            fprintf(stderr, "%s: element %zu is %g, want %g\n", what, i, (double)got,
                    (double)want);
            exit(1);
        }
    }
}

static void scenario(uint32_t width, m2c_dtype storage, m2c_dtype in, m2c_dtype out) {
    char label[96];
    snprintf(label, sizeof label, "width %u storage %s in %s out %s", (unsigned)width,
             dtype_name(storage), dtype_name(in), dtype_name(out));
    m2c_config c = small_config(width, storage, storage);
    m2c_cache *cache = create_or_die(&c);
    const size_t cper = conv_slot_elems(&c), sper = ssm_slot_elems(&c);
    const size_t n = c.num_slots;
    void *cin = alloc_elems(in, n * cper), *cout = alloc_elems(out, n * cper);
    void *sin = alloc_elems(in, n * sper), *sout = alloc_elems(out, n * sper);

    for (uint32_t layer = 0; layer < c.num_layers; layer++) {
        const uint32_t seed = 10 * layer + 1;
        fill_values(cin, in, n * cper, seed);
        fill_values(sin, in, n * sper, seed + 5);
        EXPECT_OK(m2c_set_conv(cache, layer, NULL, n, cin, in, n * cper));
        EXPECT_OK(m2c_update_ssm(cache, layer, NULL, n, sin, in, n * sper));
    }
    for (uint32_t layer = 0; layer < c.num_layers; layer++) {
        const uint32_t seed = 10 * layer + 1;
        EXPECT_OK(m2c_read_conv(cache, layer, NULL, n, cout, out, n * cper));
        expect_values(cout, out, n * cper, seed, label);
        EXPECT_OK(m2c_read_ssm(cache, layer, NULL, n, sout, out, n * sper));
        expect_values(sout, out, n * sper, seed + 5, label);
        if (in == out) {
            fill_values(cin, in, n * cper, seed);
            fill_values(sin, in, n * sper, seed + 5);
            CHECK(memcmp(cin, cout, n * cper * dtype_size(in)) == 0);
            CHECK(memcmp(sin, sout, n * sper * dtype_size(in)) == 0);
        }
    }
    /* The storage itself holds the values in the storage dtype. */
    m2c_tensor v;
    EXPECT_OK(m2c_ssm_view(cache, 1, &v));
    CHECK(v.dtype == storage);
    expect_values(v.data, storage, n * sper, 10 + 1 + 5, label);
    EXPECT_OK(m2c_conv_view(cache, 0, &v));
    CHECK(v.dtype == storage);
    expect_values(v.data, storage, n * cper, 1, label);

    free(cin);
    free(cout);
    free(sin);
    free(sout);
    m2c_destroy(cache);
}

int main(void) {
    int count = 0;
    for (int w = 3; w <= 4; w++)
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < 3; i++)
                for (int o = 0; o < 3; o++) {
                    scenario((uint32_t)w, ALL_DTYPES[s], ALL_DTYPES[i], ALL_DTYPES[o]);
                    count++;
                }
    /* Mixed storage: conv and ssm in different dtypes. */
    m2c_config c = small_config(4, M2C_DTYPE_F16, M2C_DTYPE_BF16);
    m2c_cache *cache = create_or_die(&c);
    const size_t sper = ssm_slot_elems(&c);
    void *in = alloc_elems(M2C_DTYPE_F32, sper), *out = alloc_elems(M2C_DTYPE_F16, sper);
    fill_values(in, M2C_DTYPE_F32, sper, 77);
    const int32_t slot = 1;
    EXPECT_OK(m2c_update_ssm(cache, 0, &slot, 1, in, M2C_DTYPE_F32, sper));
    EXPECT_OK(m2c_read_ssm(cache, 0, &slot, 1, out, M2C_DTYPE_F16, sper));
    expect_values(out, M2C_DTYPE_F16, sper, 77, "mixed storage");
    free(in);
    free(out);
    m2c_destroy(cache);

    printf("round trips: %d combinations ok\n", count);
    return 0;
}
