/*
 * Proves the refusals of m2c_copy_slots, each with the documented status,
 * the function named in m2c_last_error(), and the cache bit-for-bit
 * unchanged (every layer, every position, the in-use count), also when the
 * bad row comes after good ones: a destination listed twice
 * (INVALID_ARG); a destination or source past the slot count, or a
 * negative source with a real destination (OUT_OF_RANGE); NULL src or dst
 * with n > 0 and a NULL cache (NULL_ARG); misaligned src or dst, and src
 * or dst arrays placed inside (or overlapping) the cache's own storage
 * (INVALID_ARG).
 */
#include "common.h"

static m2c_cache *cache;
static snapshot before;
static uint32_t in_use_before;

static void refused(const char *label, m2c_cache *h, const int32_t *src, const int32_t *dst,
                    size_t n, m2c_status want, const char *mention) {
    fprintf(stderr, "case: %s\n", label);
    EXPECT_STATUS(m2c_copy_slots(h, src, dst, n), want);
    EXPECT_ERROR_MENTIONS("m2c_copy_slots");
    if (mention) EXPECT_ERROR_MENTIONS(mention);
    EXPECT_UNCHANGED(cache, &before);
    CHECK(slots_in_use_or_die(cache) == in_use_before);
}

int main(void) {
    m2c_config C = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    cache = create_or_die(&C);
    int32_t s = -1;
    EXPECT_OK(m2c_slot_acquire(cache, &s));
    fill_cache(cache, 41);
    /* Slot indices inside the cache's own storage: the first two int32 of
     * layer 0's SSM storage read {1, 0}, of layer 1's conv storage {0, 1}. */
    m2c_tensor sv, cv;
    EXPECT_OK(m2c_ssm_view(cache, 0, &sv));
    EXPECT_OK(m2c_conv_view(cache, 1, &cv));
    const int32_t one_zero[2] = {1, 0}, zero_one[2] = {0, 1};
    memcpy(sv.data, one_zero, sizeof one_zero);
    memcpy(cv.data, zero_one, sizeof zero_one);
    before = take_snapshot(cache);
    in_use_before = slots_in_use_or_die(cache);

    const int32_t src2[2] = {1, 2}, dst2[2] = {0, 3};
    refused("NULL cache", NULL, src2, dst2, 2, M2C_STATUS_NULL_ARG, "cache");
    refused("NULL cache, n = 0", NULL, NULL, NULL, 0, M2C_STATUS_NULL_ARG, "cache");
    refused("NULL src, n = 2", cache, NULL, dst2, 2, M2C_STATUS_NULL_ARG, "src");
    refused("NULL dst, n = 2", cache, src2, NULL, 2, M2C_STATUS_NULL_ARG, "dst");
    refused("NULL src and dst, n = 1", cache, NULL, NULL, 1, M2C_STATUS_NULL_ARG, "NULL");

    {
        const int32_t src[2] = {0, 1}, dst[2] = {2, 2};
        refused("destination twice", cache, src, dst, 2, M2C_STATUS_INVALID_ARG, "twice");
    }
    {
        const int32_t src[3] = {1, 1, 3}, dst[3] = {0, 2, 0};
        refused("destination twice, apart", cache, src, dst, 3, M2C_STATUS_INVALID_ARG, "twice");
    }
    {
        /* 70 rows (past the 64-row pairwise duplicate search), mostly
         * padding, with destination 3 at rows 5 and 68. */
        int32_t src[70], dst[70];
        for (int i = 0; i < 70; i++) {
            src[i] = 0;
            dst[i] = -1;
        }
        dst[5] = 3;
        dst[30] = 1;
        dst[68] = 3;
        refused("destination twice in 70 rows", cache, src, dst, 70, M2C_STATUS_INVALID_ARG,
                "twice");
    }
    {
        const int32_t src[2] = {1, 0}, dst[2] = {0, 4};
        refused("dst == num_slots after a good row", cache, src, dst, 2,
                M2C_STATUS_OUT_OF_RANGE, "4");
    }
    {
        const int32_t src[1] = {0}, dst[1] = {INT32_MAX};
        refused("dst INT32_MAX", cache, src, dst, 1, M2C_STATUS_OUT_OF_RANGE, "out of range");
    }
    {
        const int32_t src[1] = {4}, dst[1] = {1};
        refused("src == num_slots", cache, src, dst, 1, M2C_STATUS_OUT_OF_RANGE, "src[0]");
    }
    {
        const int32_t src[3] = {0, 1, 9}, dst[3] = {1, 2, 3};
        refused("src out of range after good rows", cache, src, dst, 3, M2C_STATUS_OUT_OF_RANGE,
                "src[2]");
    }
    {
        const int32_t src[2] = {2, -1}, dst[2] = {0, 1};
        refused("negative src with a real dst", cache, src, dst, 2, M2C_STATUS_OUT_OF_RANGE,
                "src[1]");
    }
    {
        const int32_t src[1] = {INT32_MIN}, dst[1] = {3};
        refused("INT32_MIN src with a real dst", cache, src, dst, 1, M2C_STATUS_OUT_OF_RANGE,
                "src[0]");
    }
    {
        /* Lists at odd addresses (never dereferenced). */
        int32_t *raw = (int32_t *)alloc_elems(M2C_DTYPE_F32, 8);
        memcpy((unsigned char *)raw + 1, src2, sizeof src2);
        const int32_t *odd = (const int32_t *)(const void *)((unsigned char *)raw + 1);
        refused("misaligned src", cache, odd, dst2, 2, M2C_STATUS_INVALID_ARG, "aligned");
        refused("misaligned dst", cache, src2, odd, 2, M2C_STATUS_INVALID_ARG, "aligned");
        free(raw);
    }
    {
        const int32_t *in_ssm = (const int32_t *)sv.data;  /* {1, 0} */
        const int32_t *in_conv = (const int32_t *)cv.data; /* {0, 1} */
        const int32_t dst[2] = {2, 3}, src[2] = {3, 2};
        refused("src inside the SSM storage", cache, in_ssm, dst, 2, M2C_STATUS_INVALID_ARG,
                "overlaps");
        refused("dst inside the conv storage", cache, src, in_conv, 2, M2C_STATUS_INVALID_ARG,
                "overlaps");
        refused("src and dst inside the storage", cache, in_ssm, in_conv, 2,
                M2C_STATUS_INVALID_ARG, "overlaps");
        /* Arrays that end with one element inside the storage (never
         * dereferenced: the call must refuse them first). */
        const int32_t *ssm_minus_1 = (const int32_t *)(uintptr_t)((uintptr_t)in_ssm - 4);
        const int32_t *conv_minus_1 = (const int32_t *)(uintptr_t)((uintptr_t)in_conv - 4);
        refused("src overlapping the storage by one element", cache, ssm_minus_1, dst, 2,
                M2C_STATUS_INVALID_ARG, "overlaps");
        refused("dst overlapping the storage by one element", cache, src, conv_minus_1, 2,
                M2C_STATUS_INVALID_ARG, "overlaps");
    }

    /* Still works afterwards. */
    const int32_t src[1] = {1}, dst[1] = {2};
    snapshot want = expected_copy(&C, &before, src, dst, 1);
    EXPECT_OK(m2c_copy_slots(cache, src, dst, 1));
    EXPECT_SNAPSHOT(cache, &want);
    free_snapshot(&want);
    free_snapshot(&before);
    m2c_destroy(cache);
    printf("copy_slots_refused: ok\n");
    return 0;
}
