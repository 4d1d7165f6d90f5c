/*
 * Regression: a read whose `out` lies anywhere in the cache's storage (the
 * SSM storage of the same layer, or any other layer's storage) must be
 * refused with M2C_STATUS_INVALID_ARG and change nothing; it once returned
 * OK and wrote into the cache through a `const m2c_cache *`.
 */
#include "common.h"

int main(void) {
    m2c_config c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const size_t cper = conv_slot_elems(&c), sper = ssm_slot_elems(&c);
    float *w = (float *)alloc_elems(M2C_DTYPE_F32, cper);
    fill_values(w, M2C_DTYPE_F32, cper, 1);
    EXPECT_OK(m2c_set_conv(cache, 0, NULL, 1, w, M2C_DTYPE_F32, cper));

    m2c_tensor ssm0, ssm1;
    EXPECT_OK(m2c_ssm_view(cache, 0, &ssm0));
    EXPECT_OK(m2c_ssm_view(cache, 1, &ssm1));
    snapshot before = take_snapshot(cache);

    /* Layer 0's conv window, copied into layer 0's SSM storage (64 floats
     * fit: 4 slots x 16). */
    CHECK(cper <= 4 * sper);
    EXPECT_STATUS(m2c_read_conv(cache, 0, NULL, 1, ssm0.data, M2C_DTYPE_F32, cper),
                  M2C_STATUS_INVALID_ARG);
    EXPECT_UNCHANGED(cache, &before);
    /* Layer 0's SSM state, copied into layer 1's SSM storage. */
    EXPECT_STATUS(m2c_read_ssm(cache, 0, NULL, 1, ssm1.data, M2C_DTYPE_F32, sper),
                  M2C_STATUS_INVALID_ARG);
    EXPECT_UNCHANGED(cache, &before);

    free_snapshot(&before);
    free(w);
    m2c_destroy(cache);
    return 0;
}
