/*
 * Proves the refusals of the slot lifecycle calls, each leaving the cache
 * bit-for-bit unchanged (states, positions, in-use count) and outputs
 * unwritten: releasing a free slot (never acquired, or released twice) is
 * M2C_STATUS_INVALID_ARG; a slot < 0 or >= num_slots is
 * M2C_STATUS_OUT_OF_RANGE; NULL cache or output pointers are
 * M2C_STATUS_NULL_ARG; misaligned output pointers are
 * M2C_STATUS_INVALID_ARG. The acquired set is the same afterwards.
 */
#include "common.h"

int main(void) {
    m2c_config C = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&C);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(cache, &s)); /* 0 */
    EXPECT_OK(m2c_slot_acquire(cache, &s)); /* 1 */
    EXPECT_OK(m2c_slot_acquire(cache, &s)); /* 2 */
    EXPECT_OK(m2c_slot_release(cache, 1));  /* acquired: {0, 2} */
    fill_cache(cache, 4);
    snapshot before = take_snapshot(cache);

    /* Free slots: released once already, and never acquired. */
    EXPECT_FAIL(m2c_slot_release(cache, 1), M2C_STATUS_INVALID_ARG, "m2c_slot_release",
                "not in use");
    EXPECT_FAIL(m2c_slot_release(cache, 3), M2C_STATUS_INVALID_ARG, "m2c_slot_release",
                "not in use");
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == 2);

    /* Out of range. */
    const int32_t bad[] = {-1, 4, 5, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT_FAIL(m2c_slot_release(cache, bad[i]), M2C_STATUS_OUT_OF_RANGE, "m2c_slot_release",
                    "out of range");
        EXPECT_UNCHANGED(cache, &before);
        CHECK(slots_in_use_or_die(cache) == 2);
    }

    /* NULL handles and outputs. */
    EXPECT_FAIL(m2c_slot_release(NULL, 0), M2C_STATUS_NULL_ARG, "m2c_slot_release", "cache");
    int32_t out = -4242;
    EXPECT_FAIL(m2c_slot_acquire(NULL, &out), M2C_STATUS_NULL_ARG, "m2c_slot_acquire", "cache");
    CHECK(out == -4242);
    EXPECT_FAIL(m2c_slot_acquire(cache, NULL), M2C_STATUS_NULL_ARG, "m2c_slot_acquire",
                "out_slot");
    uint32_t n = 0xDEADBEEFu;
    EXPECT_FAIL(m2c_slots_in_use(NULL, &n), M2C_STATUS_NULL_ARG, "m2c_slots_in_use", "cache");
    CHECK(n == 0xDEADBEEFu);
    EXPECT_FAIL(m2c_slots_in_use(cache, NULL), M2C_STATUS_NULL_ARG, "m2c_slots_in_use", "out");
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == 2);

    /* Misaligned outputs: refused, not written, and acquire takes no slot. */
    {
        uint32_t storage[3];
        memset(storage, 0xEE, sizeof storage);
        unsigned char *bytes = (unsigned char *)storage;
        EXPECT_FAIL(m2c_slot_acquire(cache, (int32_t *)(void *)(bytes + 1)),
                    M2C_STATUS_INVALID_ARG, "m2c_slot_acquire", "aligned");
        EXPECT_FAIL(m2c_slots_in_use(cache, (uint32_t *)(void *)(bytes + 2)),
                    M2C_STATUS_INVALID_ARG, "m2c_slots_in_use", "aligned");
        for (size_t i = 0; i < sizeof storage; i++) CHECK(bytes[i] == 0xEE);
    }
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == 2);

    /* A double release after a good release. */
    EXPECT_OK(m2c_slot_release(cache, 2));
    EXPECT_FAIL(m2c_slot_release(cache, 2), M2C_STATUS_INVALID_ARG, "m2c_slot_release", "2");
    CHECK(slots_in_use_or_die(cache) == 1);
    EXPECT_UNCHANGED(cache, &before); /* release keeps the state */
    CHECK(acquired_mask_destructive(cache) == 1u);

    free_snapshot(&before);
    m2c_destroy(cache);
    printf("slot_release_refused: ok\n");
    return 0;
}
