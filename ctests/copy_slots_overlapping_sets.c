/*
 * Proves: m2c_copy_slots reads every source before it writes any
 * destination when the source and destination sets overlap: a rotation
 * (src {0,1,2} -> dst {1,2,0}), shifts in both directions, a swap, a
 * reversal with a fixed point, and a fork whose source is itself
 * overwritten in the same call, each equal to the C reference.
 */
#include "common.h"

static m2c_config C;

static void case_(m2c_cache *cache, const char *label, const int32_t *src, const int32_t *dst,
                  size_t n) {
    fprintf(stderr, "case: %s\n", label);
    snapshot before = take_snapshot(cache);
    snapshot want = expected_copy(&C, &before, src, dst, n);
    EXPECT_OK(m2c_copy_slots(cache, src, dst, n));
    EXPECT_SNAPSHOT(cache, &want);
    free_snapshot(&want);
    free_snapshot(&before);
}

int main(void) {
    C = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_BF16);
    C.num_slots = 5;
    m2c_cache *cache = create_or_die(&C);
    fill_cache(cache, 21);
    {
        const int32_t src[3] = {0, 1, 2}, dst[3] = {1, 2, 0};
        case_(cache, "rotation {0,1,2} -> {1,2,0}", src, dst, 3);
    }
    {
        const int32_t src[3] = {0, 1, 2}, dst[3] = {2, 0, 1};
        case_(cache, "rotation {0,1,2} -> {2,0,1}", src, dst, 3);
    }
    {
        const int32_t src[3] = {0, 1, 2}, dst[3] = {1, 2, 3};
        case_(cache, "shift up {0,1,2} -> {1,2,3}", src, dst, 3);
    }
    {
        const int32_t src[3] = {2, 3, 4}, dst[3] = {1, 2, 3};
        case_(cache, "shift down {2,3,4} -> {1,2,3}", src, dst, 3);
    }
    {
        const int32_t src[2] = {3, 4}, dst[2] = {4, 3};
        case_(cache, "swap 3 <-> 4", src, dst, 2);
    }
    {
        const int32_t src[5] = {4, 3, 2, 1, 0}, dst[5] = {0, 1, 2, 3, 4};
        case_(cache, "reversal with fixed point 2", src, dst, 5);
    }
    {
        const int32_t src[3] = {0, 0, 1}, dst[3] = {1, 2, 0};
        case_(cache, "fork of 0 into 1, 2 while 0 receives 1", src, dst, 3);
    }
    {
        const int32_t src[4] = {1, 1, 1, 0}, dst[4] = {0, 2, 3, 1};
        case_(cache, "fork of 1 while 1 receives 0", src, dst, 4);
    }
    m2c_destroy(cache);
    printf("copy_slots_overlapping_sets: ok\n");
    return 0;
}
