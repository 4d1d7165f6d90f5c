/*
 * Proves the refusals of m2c_slot_snapshot_size and m2c_slot_save: NULL
 * cache, buf or out pointers (NULL_ARG); a slot < 0 or >= num_slots
 * (OUT_OF_RANGE); a buffer one byte too small, or far too small
 * (SHAPE_MISMATCH); buf inside the cache's own storage and a misaligned
 * out pointer (INVALID_ARG). Each names the function in
 * m2c_last_error(), writes neither the buffer (every byte keeps its
 * sentinel) nor *out_written / *out, and leaves the cache unchanged.
 */
#include "common.h"

static m2c_cache *cache;
static snapshot before;
static size_t size;
static unsigned char *buf;

static void refused(const char *label, m2c_cache *h, int32_t slot, void *b, size_t len,
                    size_t *out, m2c_status want, const char *mention) {
    fprintf(stderr, "case: %s\n", label);
    memset(buf, 0x5C, size + 16);
    const size_t sentinel = 0xC0FFEEu;
    const int out_ok = out != NULL && (uintptr_t)out % _Alignof(size_t) == 0;
    if (out_ok) *out = sentinel;
    EXPECT_STATUS(m2c_slot_save(h, slot, b, len, out), want);
    EXPECT_ERROR_MENTIONS("m2c_slot_save");
    if (mention) EXPECT_ERROR_MENTIONS(mention);
    for (size_t i = 0; i < size + 16; i++) CHECK(buf[i] == 0x5C);
    if (out_ok) CHECK(*out == sentinel);
    EXPECT_UNCHANGED(cache, &before);
}

int main(void) {
    m2c_config C = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    cache = create_or_die(&C);
    fill_cache(cache, 6);
    before = take_snapshot(cache);
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    buf = (unsigned char *)malloc(size + 16);
    CHECK(buf != NULL);

    /* m2c_slot_snapshot_size. */
    size_t out = 0x1234u;
    EXPECT_FAIL(m2c_slot_snapshot_size(NULL, &out), M2C_STATUS_NULL_ARG, "m2c_slot_snapshot_size",
                "cache");
    EXPECT_FAIL(m2c_slot_snapshot_size(cache, NULL), M2C_STATUS_NULL_ARG,
                "m2c_slot_snapshot_size", "out");
    CHECK(out == 0x1234u);
    {
        size_t storage[3];
        memset(storage, 0xEE, sizeof storage);
        unsigned char *bytes = (unsigned char *)storage;
        EXPECT_FAIL(m2c_slot_snapshot_size(cache, (size_t *)(void *)(bytes + 3)),
                    M2C_STATUS_INVALID_ARG, "m2c_slot_snapshot_size", "aligned");
        for (size_t i = 0; i < sizeof storage; i++) CHECK(bytes[i] == 0xEE);
    }

    /* m2c_slot_save. */
    size_t written;
    refused("NULL cache", NULL, 0, buf, size, &written, M2C_STATUS_NULL_ARG, "cache");
    refused("NULL buf", cache, 0, NULL, size, &written, M2C_STATUS_NULL_ARG, "buf");
    {
        /* (NULL, 0) is an empty buffer by the header's general rule, so too
         * small: SHAPE_MISMATCH, nothing written. */
        written = 0xC0FFEEu;
        m2c_status st = m2c_slot_save(cache, 0, NULL, 0, &written);
        CHECK(st == M2C_STATUS_SHAPE_MISMATCH);
        CHECK(written == 0xC0FFEEu);
        EXPECT_UNCHANGED(cache, &before);
    }
    refused("NULL out_written", cache, 0, buf, size, NULL, M2C_STATUS_NULL_ARG, "out_written");
    const int32_t bad_slots[] = {-1, 4, 5, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_slots / sizeof bad_slots[0]; i++)
        refused("slot out of range", cache, bad_slots[i], buf, size, &written,
                M2C_STATUS_OUT_OF_RANGE, "slot");
    refused("len = size - 1", cache, 1, buf, size - 1, &written, M2C_STATUS_SHAPE_MISMATCH,
            "smaller");
    refused("len = 80", cache, 1, buf, 80, &written, M2C_STATUS_SHAPE_MISMATCH, "smaller");
    refused("len = 1", cache, 1, buf, 1, &written, M2C_STATUS_SHAPE_MISMATCH, "smaller");
    refused("len = 0", cache, 1, buf, 0, &written, M2C_STATUS_SHAPE_MISMATCH, "smaller");
    {
        /* The conv storage of a layer (512 bytes >= size) as the buffer. */
        m2c_tensor cv;
        EXPECT_OK(m2c_conv_view(cache, 1, &cv));
        CHECK(C.num_slots * conv_slot_bytes(&C) >= size);
        refused("buf inside the conv storage", cache, 2, cv.data, size, &written,
                M2C_STATUS_INVALID_ARG, "overlaps");
    }
    {
        size_t storage[3];
        memset(storage, 0xEE, sizeof storage);
        unsigned char *bytes = (unsigned char *)storage;
        refused("misaligned out_written", cache, 0, buf, size, (size_t *)(void *)(bytes + 1),
                M2C_STATUS_INVALID_ARG, "aligned");
        for (size_t i = 0; i < sizeof storage; i++) CHECK(bytes[i] == 0xEE);
    }

    /* Still works afterwards. */
    written = 0;
    EXPECT_OK(m2c_slot_save(cache, 3, buf, size, &written));
    CHECK(written == size);
    free(buf);
    free_snapshot(&before);
    m2c_destroy(cache);
    printf("slot_save_refused: ok\n");
    return 0;
}
