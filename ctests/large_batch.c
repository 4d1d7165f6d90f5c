/*
 * Proves: calls big enough to run on the library's internal thread pool
 * (more than 512 KiB of state touched, at least 2 slots) give the same
 * results as the reference: update_conv, set_conv, update_ssm, read_conv,
 * read_ssm with permuted lists and padding rows, and reset across layers.
 * The shape is wide and shallow (65536 channels, state 4) so the pool is
 * used while the whole cache stays ~16 MB, small enough for valgrind.
 */
#include "common.h"

static m2c_config C;

static m2c_config wide_config(uint32_t width, m2c_dtype cdt, m2c_dtype sdt) {
    m2c_config c;
    m2c_config_init(&c);
    c.num_layers = 2;
    c.num_slots = 4;
    c.num_heads = 1024;
    c.head_dim = 64;
    c.intermediate_size = 65536;
    c.state_size = 4;
    c.n_groups = 1;
    c.conv_kernel_size = 4;
    c.conv_width = width;
    c.conv_dtype = cdt;
    c.ssm_dtype = sdt;
    return c;
}

static void scenario(uint32_t width, m2c_dtype cdt, m2c_dtype sdt, m2c_dtype io) {
    fprintf(stderr, "width %u conv %s ssm %s io %s\n", (unsigned)width, dtype_name(cdt),
            dtype_name(sdt), dtype_name(io));
    C = wide_config(width, cdt, sdt);
    m2c_cache *cache = create_or_die(&C);
    const size_t dim = conv_dim_of(&C), cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C);
    CHECK(cper * dtype_size(cdt) >= 256 * 1024);
    CHECK(2 * sper * dtype_size(sdt) >= 512 * 1024);

    /* set_conv + update_ssm on 3 of 4 slots, permuted, one padding row. */
    const int32_t rows[4] = {3, -1, 0, 2};
    void *w = alloc_elems(io, 4 * cper);
    void *s = alloc_elems(io, 4 * sper);
    fill_values(w, io, 4 * cper, 21);
    fill_values(s, io, 4 * sper, 22);
    for (uint32_t l = 0; l < C.num_layers; l++) {
        EXPECT_OK(m2c_set_conv(cache, l, rows, 4, w, io, 4 * cper));
        EXPECT_OK(m2c_update_ssm(cache, l, rows, 4, s, io, 4 * sper));
    }
    /* update_conv: push one column to the same rows. */
    void *x = alloc_elems(io, 4 * dim);
    fill_values(x, io, 4 * dim, 23);
    EXPECT_OK(m2c_update_conv(cache, 1, rows, 4, x, io, 4 * dim));

    /* Read every slot back in another order, with padding. */
    const int32_t back_rows[5] = {0, 1, -1, 2, 3};
    float *cout = (float *)alloc_elems(M2C_DTYPE_F32, 5 * cper);
    float *sout = (float *)alloc_elems(M2C_DTYPE_F32, 5 * sper);
    for (uint32_t l = 0; l < C.num_layers; l++) {
        EXPECT_OK(m2c_read_conv(cache, l, back_rows, 5, cout, M2C_DTYPE_F32, 5 * cper));
        EXPECT_OK(m2c_read_ssm(cache, l, back_rows, 5, sout, M2C_DTYPE_F32, 5 * sper));
        for (int r = 0; r < 5; r++) {
            const int32_t slot = back_rows[r];
            int src = -1; /* the row of `rows` that wrote this slot */
            for (int k = 0; k < 4; k++)
                if (slot >= 0 && rows[k] == slot) src = k;
            for (size_t ch = 0; ch < dim; ch++)
                for (size_t col = 0; col < width; col++) {
                    const size_t i = ch * width + col;
                    float want = 0.0f;
                    if (src >= 0) {
                        if (l == 1) /* shifted by one, new column last */
                            want = col + 1 < width
                                       ? load_elem(w, io, (size_t)src * cper + i + 1)
                                       : load_elem(x, io, (size_t)src * dim + ch);
                        else
                            want = load_elem(w, io, (size_t)src * cper + i);
                    }
                    if (cout[(size_t)r * cper + i] != want) {
                        fprintf(stderr, "layer %u row %d chan %zu col %zu: %g != %g\n",
                                (unsigned)l, r, ch, col, (double)cout[(size_t)r * cper + i],
                                (double)want);
                        exit(1);
                    }
                }
            for (size_t i = 0; i < sper; i++) {
                float want = src >= 0 ? load_elem(s, io, (size_t)src * sper + i) : 0.0f;
                CHECK(sout[(size_t)r * sper + i] == want);
            }
        }
    }

    /* Reset slots 0 and 3 in both layers; 2 keeps its state. */
    const int32_t r03[2] = {3, 0};
    EXPECT_OK(m2c_reset(cache, r03, 2));
    for (uint32_t l = 0; l < C.num_layers; l++) {
        EXPECT_OK(m2c_read_ssm(cache, l, NULL, 4, sout, M2C_DTYPE_F32, 4 * sper));
        for (size_t i = 0; i < sper; i++) {
            CHECK(sout[0 * sper + i] == 0.0f);
            CHECK(sout[1 * sper + i] == 0.0f); /* never written */
            CHECK(sout[2 * sper + i] == load_elem(s, io, 3 * sper + i));
            CHECK(sout[3 * sper + i] == 0.0f);
        }
        EXPECT_OK(m2c_read_conv(cache, l, r03, 2, cout, M2C_DTYPE_F32, 2 * cper));
        for (size_t i = 0; i < 2 * cper; i++) CHECK(cout[i] == 0.0f);
    }

    free(w);
    free(s);
    free(x);
    free(cout);
    free(sout);
    m2c_destroy(cache);
}

int main(void) {
    scenario(4, M2C_DTYPE_F32, M2C_DTYPE_F32, M2C_DTYPE_F32);
    scenario(3, M2C_DTYPE_BF16, M2C_DTYPE_F16, M2C_DTYPE_F32);
    scenario(4, M2C_DTYPE_F16, M2C_DTYPE_BF16, M2C_DTYPE_BF16);
    printf("large batches: ok\n");
    return 0;
}
