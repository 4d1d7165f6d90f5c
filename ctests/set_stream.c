/*
 * Proves: m2c_set_stream on a host cache accepts NULL (no stream) and
 * changes nothing, refuses any other stream with M2C_STATUS_UNSUPPORTED
 * and a message, and refuses a NULL handle; the cache keeps working after
 * each call. (The device side runs in m2c-gpu-check on a GPU.)
 */
#include "common.h"

int main(void) {
    m2c_config c = small_config(3, M2C_DTYPE_F32, M2C_DTYPE_BF16);
    m2c_cache *cache = create_or_die(&c);

    /* Some state, so "unchanged" means something. */
    size_t n = ssm_slot_elems(&c);
    float *st = (float *)alloc_elems(M2C_DTYPE_F32, n);
    fill_values(st, M2C_DTYPE_F32, n, 7);
    const int32_t slot = 1;
    EXPECT_OK(m2c_update_ssm(cache, 0, &slot, 1, st, M2C_DTYPE_F32, n));
    EXPECT_OK(m2c_advance(cache, &slot, 1, 5));
    snapshot before = take_snapshot(cache);

    EXPECT_OK(m2c_set_stream(cache, NULL));
    EXPECT_UNCHANGED(cache, &before);

    int not_a_stream;
    EXPECT_FAIL(m2c_set_stream(cache, &not_a_stream), M2C_STATUS_UNSUPPORTED, "m2c_set_stream",
                "host memory");
    EXPECT_UNCHANGED(cache, &before);

    EXPECT_FAIL(m2c_set_stream(NULL, NULL), M2C_STATUS_NULL_ARG, "m2c_set_stream", "cache");

    /* Still a working cache. */
    uint64_t pos = 0;
    EXPECT_OK(m2c_position(cache, slot, &pos));
    CHECK(pos == 5);

    free_snapshot(&before);
    free(st);
    m2c_destroy(cache);
    printf("set_stream: ok\n");
    return 0;
}
