/*
 * Proves: a cache far larger than the machine (INT32_MAX slots at the
 * default shapes, tens of terabytes) fails cleanly with
 * M2C_STATUS_OUT_OF_MEMORY, and a shape whose byte count overflows fails
 * with M2C_STATUS_INVALID_CONFIG; in both cases nothing is written and the
 * process goes on to create and use a normal cache.
 *
 * Under ASan this test needs ASAN_OPTIONS=allocator_may_return_null=1 (set
 * by CMakeLists.txt), so that ASan's allocator returns NULL as libc would.
 */
#include "common.h"

static char cache_sentinel_object;
#define CACHE_SENTINEL ((m2c_cache *)(void *)&cache_sentinel_object)

int main(void) {
    /* Valid but absurd: 2^31-1 slots of Mamba2-130m. */
    m2c_config big;
    m2c_config_init(&big);
    big.num_slots = INT32_MAX;
    uint64_t bytes = 0;
    m2c_status st = m2c_config_bytes(&big, &bytes);
    if (st == M2C_STATUS_OK) {
        CHECK(bytes > (1ull << 44)); /* > 16 TiB: no machine here has that */
        printf("absurd config needs %llu bytes\n", (unsigned long long)bytes);
    } else {
        EXPECT_STATUS(st, M2C_STATUS_INVALID_CONFIG);
    }
    m2c_cache *out = CACHE_SENTINEL;
    st = m2c_create(&big, &out);
    if (st != M2C_STATUS_OUT_OF_MEMORY && st != M2C_STATUS_INVALID_CONFIG) {
        EXPECT_STATUS(st, M2C_STATUS_OUT_OF_MEMORY);
    }
    CHECK(out == CACHE_SENTINEL);
    EXPECT_ERROR_MENTIONS("m2c_create");
    printf("m2c_create(absurd) -> %s: %s\n", m2c_status_str(st), m2c_last_error());

    /* Byte counts that overflow 64 bits are refused, not wrapped. */
    m2c_config huge;
    m2c_config_init(&huge);
    huge.num_layers = UINT32_MAX;
    huge.num_slots = INT32_MAX;
    huge.num_heads = UINT32_MAX;
    huge.head_dim = 1;
    huge.intermediate_size = UINT32_MAX;
    huge.state_size = UINT32_MAX;
    huge.n_groups = 1;
    bytes = 7;
    EXPECT_STATUS(m2c_config_bytes(&huge, &bytes), M2C_STATUS_INVALID_CONFIG);
    CHECK(bytes == 7);
    EXPECT_STATUS(m2c_create(&huge, &out), M2C_STATUS_INVALID_CONFIG);
    CHECK(out == CACHE_SENTINEL);

    /* The process is fine: a normal cache works. */
    m2c_config c = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_cache *cache = create_or_die(&c);
    const size_t n = ssm_slot_elems(&c);
    float *in = (float *)alloc_elems(M2C_DTYPE_F32, n);
    float *back = (float *)alloc_elems(M2C_DTYPE_F32, n);
    fill_values(in, M2C_DTYPE_F32, n, 7);
    const int32_t slot = 3;
    EXPECT_OK(m2c_update_ssm(cache, 1, &slot, 1, in, M2C_DTYPE_F32, n));
    EXPECT_OK(m2c_read_ssm(cache, 1, &slot, 1, back, M2C_DTYPE_F32, n));
    CHECK(memcmp(in, back, n * sizeof(float)) == 0);
    free(in);
    free(back);
    m2c_destroy(cache);

    /* And so does the default one. */
    m2c_config d;
    m2c_config_init(&d);
    cache = create_or_die(&d);
    m2c_destroy(cache);

    printf("absurd allocation: ok\n");
    return 0;
}
