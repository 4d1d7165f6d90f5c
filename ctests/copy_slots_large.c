/*
 * Proves: m2c_copy_slots is also correct when a call moves enough bytes
 * (over 512 KiB across 2 layers: PAR_MIN_BYTES in src/cache.rs) to copy
 * the layers on the thread pool: a full reversal of 8 slots, a rotation,
 * and a fork of one slot into the seven others with a padding row, each
 * equal to the C reference.
 */
#include "common.h"

static m2c_config C;

static void case_(m2c_cache *cache, const int32_t *src, const int32_t *dst, size_t n) {
    snapshot before = take_snapshot(cache);
    snapshot want = expected_copy(&C, &before, src, dst, n);
    EXPECT_OK(m2c_copy_slots(cache, src, dst, n));
    EXPECT_SNAPSHOT(cache, &want);
    free_snapshot(&want);
    free_snapshot(&before);
}

int main(void) {
    m2c_config_init(&C);
    C.num_layers = 2;
    C.num_slots = 8;
    C.num_heads = 8;
    C.head_dim = 16;
    C.intermediate_size = 128;
    C.state_size = 80;
    C.n_groups = 1;
    C.conv_kernel_size = 4;
    C.conv_width = 4;
    C.conv_dtype = M2C_DTYPE_BF16;
    C.ssm_dtype = M2C_DTYPE_F32;
    /* Even the fork (7 real moves) copies 7 x 2 layers x (2.25 KiB conv +
     * 40 KiB SSM) = 591 KiB, over the 512 KiB where the pool takes over. */
    CHECK(7 * 2 * (conv_slot_bytes(&C) + ssm_slot_bytes(&C)) > 512 * 1024);
    m2c_cache *cache = create_or_die(&C);
    fill_cache(cache, 51);

    const int32_t iota[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const int32_t rev[8] = {7, 6, 5, 4, 3, 2, 1, 0};
    const int32_t rot[8] = {3, 4, 5, 6, 7, 0, 1, 2};
    case_(cache, rev, iota, 8);
    case_(cache, iota, rot, 8);
    const int32_t fsrc[9] = {5, 5, 5, 5, 5, 5, 5, 0, 5};
    const int32_t fdst[9] = {0, 1, 2, 3, 4, 6, 7, -1, 5};
    case_(cache, fsrc, fdst, 9);
    m2c_destroy(cache);
    printf("copy_slots_large: ok\n");
    return 0;
}
