/*
 * Proves: a well-formed snapshot made for another shape is refused by
 * m2c_slot_load with M2C_STATUS_INCOMPATIBLE, m2c_last_error() names the
 * first differing field, and the target cache is unchanged: caches that
 * differ in conv_width (K vs K-1, both directions), ssm_dtype, conv_dtype
 * or num_layers; then snapshots edited in C and resealed with a valid
 * XXH64 (so only the edited field is wrong): each of the ten fingerprint
 * fields (INCOMPATIBLE naming it), format versions 0 and 3 (INCOMPATIBLE),
 * a header size or payload size that contradicts the layout, a snapshot
 * 8 bytes shorter or longer than its header declares, a bad magic (all
 * CORRUPT); and an edited position at offset 56 loads as that
 * position.
 */
#include "formats.h"

static const char *const FIELD[10] = {
    "num_layers", "intermediate_size", "num_heads",   "head_dim",  "state_size",
    "n_groups",   "conv_kernel_size",  "conv_width",  "conv_dtype", "ssm_dtype"};

/* A saved snapshot of slot 1 of a filled cache with config c. */
static unsigned char *snapshot_of(const m2c_config *c, size_t *size) {
    m2c_cache *src = create_or_die(c);
    fill_cache(src, 17);
    EXPECT_OK(m2c_slot_snapshot_size(src, size));
    unsigned char *b = (unsigned char *)malloc(*size);
    CHECK(b != NULL);
    size_t written = 0;
    EXPECT_OK(m2c_slot_save(src, 1, b, *size, &written));
    m2c_destroy(src);
    return b;
}

/* A snapshot from config `from` is refused by a cache with config `to`. */
static void foreign(const char *label, const m2c_config *from, const m2c_config *to,
                    const char *field) {
    fprintf(stderr, "case: %s\n", label);
    size_t size = 0;
    unsigned char *b = snapshot_of(from, &size);
    m2c_cache *target = create_or_die(to);
    fill_cache(target, 18);
    snapshot before = take_snapshot(target);
    EXPECT_FAIL(m2c_slot_load(target, 0, b, size), M2C_STATUS_INCOMPATIBLE, "m2c_slot_load",
                field);
    EXPECT_UNCHANGED(target, &before);
    free_snapshot(&before);
    m2c_destroy(target);
    free(b);
}

int main(void) {
    xxh64_self_test();
    const m2c_config base = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    m2c_config k1 = base;
    k1.conv_width = 3;
    foreign("conv_width K into K-1", &base, &k1, "conv_width");
    foreign("conv_width K-1 into K", &k1, &base, "conv_width");
    m2c_config ssm16 = base;
    ssm16.ssm_dtype = M2C_DTYPE_F16;
    foreign("ssm_dtype f32 into f16", &base, &ssm16, "ssm_dtype");
    m2c_config conv32 = base;
    conv32.conv_dtype = M2C_DTYPE_F32;
    foreign("conv_dtype bf16 into f32", &base, &conv32, "conv_dtype");
    m2c_config three = base;
    three.num_layers = 3;
    foreign("num_layers 2 into 3", &base, &three, "num_layers");

    /* Edited snapshots of the base shape with a valid checksum. */
    size_t size = 0;
    unsigned char *good = snapshot_of(&base, &size);
    CHECK(le64(good + size - 8) == xxh64(good, size - 8));
    unsigned char *b = (unsigned char *)malloc(size);
    CHECK(b != NULL);
    m2c_cache *target = create_or_die(&base);
    fill_cache(target, 19);
    snapshot before = take_snapshot(target);

    for (int f = 0; f < 10; f++) {
        fprintf(stderr, "case: fingerprint field %s + 1\n", FIELD[f]);
        memcpy(b, good, size);
        put_le32(b + 16 + 4 * f, le32(b + 16 + 4 * f) + 1);
        reseal(b, size);
        EXPECT_FAIL(m2c_slot_load(target, 2, b, size), M2C_STATUS_INCOMPATIBLE, "m2c_slot_load",
                    FIELD[f]);
        EXPECT_UNCHANGED(target, &before);
    }
    const uint32_t versions[2] = {0, 3};
    for (int v = 0; v < 2; v++) {
        fprintf(stderr, "case: version %u\n", (unsigned)versions[v]);
        memcpy(b, good, size);
        put_le32(b + 8, versions[v]);
        reseal(b, size);
        EXPECT_FAIL(m2c_slot_load(target, 2, b, size), M2C_STATUS_INCOMPATIBLE, "m2c_slot_load",
                    "version");
        EXPECT_UNCHANGED(target, &before);
    }
    fprintf(stderr, "case: header size 73\n");
    memcpy(b, good, size);
    put_le32(b + 12, 73);
    reseal(b, size);
    EXPECT_STATUS(m2c_slot_load(target, 2, b, size), M2C_STATUS_CORRUPT);
    EXPECT_UNCHANGED(target, &before);
    fprintf(stderr, "case: payload size + 1\n");
    memcpy(b, good, size);
    put_le64(b + 64, le64(b + 64) + 1);
    reseal(b, size);
    EXPECT_STATUS(m2c_slot_load(target, 2, b, size), M2C_STATUS_CORRUPT);
    EXPECT_UNCHANGED(target, &before);
    {
        /* 8 bytes shorter / longer than the header declares, resealed. */
        unsigned char *other = (unsigned char *)malloc(size + 8);
        CHECK(other != NULL);
        fprintf(stderr, "case: 8 payload bytes short, resealed\n");
        memcpy(other, good, size - 16);
        reseal(other, size - 8);
        EXPECT_STATUS(m2c_slot_load(target, 2, other, size - 8), M2C_STATUS_CORRUPT);
        EXPECT_UNCHANGED(target, &before);
        fprintf(stderr, "case: 8 bytes too long, resealed\n");
        memcpy(other, good, size - 8);
        memset(other + size - 8, 0x3C, 8);
        reseal(other, size + 8);
        EXPECT_STATUS(m2c_slot_load(target, 2, other, size + 8), M2C_STATUS_CORRUPT);
        EXPECT_UNCHANGED(target, &before);
        free(other);
    }
    fprintf(stderr, "case: bad magic, resealed\n");
    memcpy(b, good, size);
    b[7] = '!';
    reseal(b, size);
    EXPECT_FAIL(m2c_slot_load(target, 2, b, size), M2C_STATUS_CORRUPT, "m2c_slot_load", "magic");
    EXPECT_UNCHANGED(target, &before);

    /* The position lives at offset 56: an edited one loads as edited. */
    memcpy(b, good, size);
    put_le64(b + 56, 0x0102030405060708ull);
    reseal(b, size);
    EXPECT_OK(m2c_slot_load(target, 2, b, size));
    uint64_t pos = 0;
    EXPECT_OK(m2c_position(target, 2, &pos));
    CHECK(pos == 0x0102030405060708ull);

    free_snapshot(&before);
    m2c_destroy(target);
    free(b);
    free(good);
    printf("slot_snapshot_incompatible: ok\n");
    return 0;
}
