/*
 * Proves the argument refusals of m2c_slot_load, each naming the function
 * in m2c_last_error(), leaving the cache bit-for-bit unchanged and the
 * snapshot buffer unmodified: NULL cache, and NULL buf with len > 0
 * (NULL_ARG); (NULL, 0), an empty buffer, and a bad magic (CORRUPT); a
 * slot < 0 or >= num_slots with a valid snapshot (OUT_OF_RANGE); a valid
 * snapshot placed inside the cache's own storage, and a buffer whose last
 * byte overlaps the storage (INVALID_ARG).
 */
#include "common.h"

static m2c_cache *cache;
static snapshot before;

static void refused(const char *label, m2c_cache *h, int32_t slot, const void *b, size_t len,
                    m2c_status want, const char *mention, int check_buf) {
    fprintf(stderr, "case: %s\n", label);
    unsigned char *copy = NULL;
    if (check_buf) {
        copy = (unsigned char *)malloc(len);
        CHECK(copy != NULL);
        memcpy(copy, b, len);
    }
    EXPECT_STATUS(m2c_slot_load(h, slot, b, len), want);
    EXPECT_ERROR_MENTIONS("m2c_slot_load");
    if (mention) EXPECT_ERROR_MENTIONS(mention);
    if (check_buf) {
        CHECK(memcmp(copy, b, len) == 0);
        free(copy);
    }
    EXPECT_UNCHANGED(cache, &before);
}

int main(void) {
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    cache = create_or_die(&C);
    fill_cache(cache, 8);
    size_t size = 0, written = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    unsigned char *snap = (unsigned char *)malloc(size);
    CHECK(snap != NULL);
    EXPECT_OK(m2c_slot_save(cache, 0, snap, size, &written));
    /* Make slot 0's snapshot differ from slot 2's state in every way. */
    fill_cache(cache, 9);
    /* A valid snapshot of (old) slot 0 inside layer 1's conv storage. */
    m2c_tensor cv;
    EXPECT_OK(m2c_conv_view(cache, 1, &cv));
    CHECK(C.num_slots * conv_slot_bytes(&C) >= size);
    memcpy(cv.data, snap, size);
    before = take_snapshot(cache);

    refused("NULL cache", NULL, 2, snap, size, M2C_STATUS_NULL_ARG, "cache", 1);
    refused("NULL buf, len = size", cache, 2, NULL, size, M2C_STATUS_NULL_ARG, "buf", 0);
    refused("(NULL, 0)", cache, 2, NULL, 0, M2C_STATUS_CORRUPT, NULL, 0);
    refused("len 0", cache, 2, snap, 0, M2C_STATUS_CORRUPT, NULL, 0);
    const int32_t bad_slots[] = {-1, 4, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_slots / sizeof bad_slots[0]; i++)
        refused("slot out of range", cache, bad_slots[i], snap, size, M2C_STATUS_OUT_OF_RANGE,
                "slot", 1);
    {
        unsigned char *bad = (unsigned char *)malloc(size);
        CHECK(bad != NULL);
        memcpy(bad, snap, size);
        bad[3] = 'X';
        refused("bad magic", cache, 2, bad, size, M2C_STATUS_CORRUPT, "magic", 1);
        memcpy(bad, "M2CCACHE", 8); /* a cache file's magic is not a snapshot's */
        refused("cache-file magic", cache, 2, bad, size, M2C_STATUS_CORRUPT, "magic", 1);
        free(bad);
    }
    refused("valid snapshot inside the conv storage", cache, 2, cv.data, size,
            M2C_STATUS_INVALID_ARG, "overlaps", 1);
    {
        /* A buffer ending with one byte inside the storage (the call must
         * refuse it before reading it). */
        const void *tail = (const void *)(uintptr_t)((uintptr_t)cv.data - (size - 1));
        refused("buffer overlapping the storage by its last byte", cache, 2, tail, size,
                M2C_STATUS_INVALID_ARG, "overlaps", 0);
    }

    /* Still works afterwards. */
    EXPECT_OK(m2c_slot_load(cache, 2, snap, size));
    free(snap);
    free_snapshot(&before);
    m2c_destroy(cache);
    printf("slot_load_refused: ok\n");
    return 0;
}
