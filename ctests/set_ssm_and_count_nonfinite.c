/*
 * Proves: m2c_set_ssm replaces whole SSM states of the listed slots
 * (converting from the caller's dtype) and m2c_count_nonfinite counts the
 * NaN and infinite elements of one slot over every layer; their first
 * names, m2c_update_ssm and m2c_check_finite, do exactly the same on a
 * second cache (state bytes and counts equal). Refusals name the function
 * that was called and change nothing.
 */
#include "common.h"

#include <math.h>

int main(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_BF16);
    c.num_layers = 2;
    m2c_cache *a = create_or_die(&c), *b = create_or_die(&c);
    const size_t per = ssm_slot_elems(&c);
    float *st = (float *)alloc_elems(M2C_DTYPE_F32, 2 * per);
    fill_values(st, M2C_DTYPE_F32, 2 * per, 77);
    st[3] = NAN;       /* slot 2 (row 0) */
    st[per + 1] = -INFINITY; /* slot 0 (row 1) */
    st[per + 2] = NAN;
    const int32_t rows[2] = {2, 0};
    EXPECT_OK(m2c_set_ssm(a, 1, rows, 2, st, M2C_DTYPE_F32, 2 * per));
    EXPECT_OK(m2c_update_ssm(b, 1, rows, 2, st, M2C_DTYPE_F32, 2 * per));

    snapshot sa = take_snapshot(a), sb = take_snapshot(b);
    if (!snapshots_equal(&sa, &sb)) {
        fprintf(stderr, "m2c_set_ssm and m2c_update_ssm stored different states\n");
        return 1;
    }
    const uint64_t want[4] = {2, 0, 1, 0};
    for (int32_t s = 0; s < 4; s++) {
        uint64_t n1 = 99, n2 = 99;
        EXPECT_OK(m2c_count_nonfinite(a, s, &n1));
        EXPECT_OK(m2c_check_finite(b, s, &n2));
        if (n1 != want[s] || n2 != want[s]) {
            fprintf(stderr, "slot %d: count_nonfinite %llu, check_finite %llu, want %llu\n", (int)s,
                    (unsigned long long)n1, (unsigned long long)n2, (unsigned long long)want[s]);
            return 1;
        }
    }

    /* Refusals: each names the function called, and nothing changes. */
    EXPECT_FAIL(m2c_set_ssm(a, 0, rows, 2, st, M2C_DTYPE_F32, per), M2C_STATUS_SHAPE_MISMATCH,
                "m2c_set_ssm", "state");
    EXPECT_FAIL(m2c_set_ssm(a, 2, rows, 2, st, M2C_DTYPE_F32, 2 * per), M2C_STATUS_OUT_OF_RANGE,
                "m2c_set_ssm", "layer");
    EXPECT_FAIL(m2c_set_ssm(a, 0, rows, 2, NULL, M2C_DTYPE_F32, 2 * per), M2C_STATUS_NULL_ARG,
                "m2c_set_ssm", "state");
    EXPECT_FAIL(m2c_update_ssm(b, 0, rows, 2, st, M2C_DTYPE_F32, per), M2C_STATUS_SHAPE_MISMATCH,
                "m2c_update_ssm", "state");
    uint64_t untouched = 12345;
    EXPECT_FAIL(m2c_count_nonfinite(a, 4, &untouched), M2C_STATUS_OUT_OF_RANGE,
                "m2c_count_nonfinite", "slot");
    EXPECT_FAIL(m2c_count_nonfinite(a, 0, NULL), M2C_STATUS_NULL_ARG, "m2c_count_nonfinite",
                "out_nonfinite");
    EXPECT_FAIL(m2c_count_nonfinite(NULL, 0, &untouched), M2C_STATUS_NULL_ARG,
                "m2c_count_nonfinite", "cache");
    EXPECT_FAIL(m2c_check_finite(b, -1, &untouched), M2C_STATUS_OUT_OF_RANGE, "m2c_check_finite",
                "slot");
    if (untouched != 12345) {
        fprintf(stderr, "a failed count wrote its output\n");
        return 1;
    }
    EXPECT_UNCHANGED(a, &sa);
    EXPECT_UNCHANGED(b, &sb);

    free_snapshot(&sa);
    free_snapshot(&sb);
    free(st);
    m2c_destroy(a);
    m2c_destroy(b);
    puts("ok");
    return 0;
}
