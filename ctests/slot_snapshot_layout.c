/*
 * Proves, from C, the slot snapshot layout of docs/FORMATS.md:
 * m2c_slot_snapshot_size() is 80 + P with P = num_layers * (conv_dim *
 * conv_width * size(conv_dtype) + num_heads * head_dim * state_size *
 * size(ssm_dtype)) for several shapes and dtypes; m2c_slot_save writes
 * exactly that many bytes (reported in *out_written, nothing past them in
 * a larger buffer): magic "M2CSLOT\0", version 1 at 8, header size 72 at
 * 12, the ten-field fingerprint at 16, the slot's position at 56 and P at
 * 64 (little-endian), then per layer the slot's conv window and SSM state
 * bytes as the views show them, then the XXH64 (seed 0) of everything
 * before, checked with an independent C implementation.
 */
#include "formats.h"

static size_t formula(const m2c_config *c) {
    return 80 + (size_t)c->num_layers *
                    (conv_dim_of(c) * c->conv_width * dtype_size(c->conv_dtype) +
                     (size_t)c->num_heads * c->head_dim * c->state_size * dtype_size(c->ssm_dtype));
}

static void check_layout(const m2c_config *c, int32_t slot) {
    m2c_cache *cache = create_or_die(c);
    fill_cache(cache, 3);
    size_t size = 0;
    EXPECT_OK(m2c_slot_snapshot_size(cache, &size));
    CHECK(size == formula(c));
    const size_t P = size - 80;

    const size_t extra = 40;
    unsigned char *buf = (unsigned char *)malloc(size + extra);
    CHECK(buf != NULL);
    memset(buf, 0xA5, size + extra);
    size_t written = 0xBADu;
    EXPECT_OK(m2c_slot_save(cache, slot, buf, size + extra, &written));
    CHECK(written == size);
    for (size_t i = size; i < size + extra; i++) CHECK(buf[i] == 0xA5);

    CHECK(memcmp(buf, "M2CSLOT\0", 8) == 0);
    CHECK(le32(buf + 8) == 1);
    CHECK(le32(buf + 12) == 72);
    const uint32_t fp[10] = {c->num_layers,   c->intermediate_size, c->num_heads,
                             c->head_dim,     c->state_size,        c->n_groups,
                             c->conv_kernel_size, c->conv_width,    c->conv_dtype,
                             c->ssm_dtype};
    for (int i = 0; i < 10; i++) CHECK(le32(buf + 16 + 4 * i) == fp[i]);
    uint64_t pos = 0;
    EXPECT_OK(m2c_position(cache, slot, &pos));
    CHECK(pos != 0);
    CHECK(le64(buf + 56) == pos);
    CHECK(le64(buf + 64) == P);

    size_t at = 72;
    const size_t cb = conv_slot_bytes(c), sb = ssm_slot_bytes(c);
    for (uint32_t l = 0; l < c->num_layers; l++) {
        m2c_tensor cv, sv;
        EXPECT_OK(m2c_conv_view(cache, l, &cv));
        EXPECT_OK(m2c_ssm_view(cache, l, &sv));
        CHECK(memcmp(buf + at, (const unsigned char *)cv.data + (size_t)slot * cb, cb) == 0);
        at += cb;
        CHECK(memcmp(buf + at, (const unsigned char *)sv.data + (size_t)slot * sb, sb) == 0);
        at += sb;
    }
    CHECK(at == 72 + P);
    CHECK(le64(buf + at) == xxh64(buf, at));
    free(buf);
    m2c_destroy(cache);
}

int main(void) {
    xxh64_self_test();
    m2c_config c = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    check_layout(&c, 2);
    c = small_config(3, M2C_DTYPE_F16, M2C_DTYPE_BF16);
    check_layout(&c, 0);
    c = small_config(4, M2C_DTYPE_F32, M2C_DTYPE_F16);
    c.num_layers = 3;
    c.num_slots = 2;
    check_layout(&c, 1);
    c = small_config(3, M2C_DTYPE_F32, M2C_DTYPE_F32);
    c.num_layers = 1;
    c.num_slots = 1;
    c.n_groups = 1;
    c.state_size = 3;
    check_layout(&c, 0);
    printf("slot_snapshot_layout: ok\n");
    return 0;
}
