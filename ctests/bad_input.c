/*
 * Proves: every refused call leaves the cache bit-for-bit unchanged (all
 * layers' conv and SSM storage, snapshotted through the views, and every
 * position), returns the documented status, names the function in
 * m2c_last_error(), and leaves a read's `out` buffer untouched.
 *
 * Cases, for m2c_update_conv, m2c_set_conv, m2c_update_ssm (writes) and
 * m2c_read_conv, m2c_read_ssm (reads): NULL cache, NULL data with len > 0,
 * wrong len, unknown dtype, layer out of range, misaligned data, misaligned
 * slots, data inside the cache's own storage (from a view), slots inside
 * the cache's storage, duplicate slots, an out-of-range slot after valid
 * ones. Then m2c_reset, m2c_advance, m2c_position and the views.
 */
#include "common.h"

typedef m2c_status (*write_fn)(m2c_cache *, uint32_t, const int32_t *, size_t, const void *,
                               m2c_dtype, size_t);
typedef m2c_status (*read_fn)(const m2c_cache *, uint32_t, const int32_t *, size_t, void *,
                              m2c_dtype, size_t);

typedef struct op {
    const char *name;
    write_fn write; /* exactly one of write / read is set */
    read_fn read;
    int ssm;        /* which storage it touches: 0 conv, 1 ssm */
    size_t per_row; /* elements per row */
} op;

static m2c_cache *cache;
static m2c_config C;
static snapshot before;
/* Set for the cases whose `out` range reaches past any allocation: there the
 * test cannot copy `out` to compare it (the cache must still be unchanged). */
static int out_not_readable;

/* The storage the op touches in `layer`, from a view. */
static void *storage_of(const op *o, uint32_t layer, m2c_dtype *dtype) {
    m2c_tensor t;
    if (o->ssm)
        EXPECT_OK(m2c_ssm_view(cache, layer, &t));
    else
        EXPECT_OK(m2c_conv_view(cache, layer, &t));
    *dtype = t.dtype;
    return t.data;
}

/* Runs one refused call of op o and checks status, message, cache and out. */
static void refused(const op *o, const char *label, m2c_cache *h, uint32_t layer,
                    const int32_t *slots, size_t n, const void *data, m2c_dtype dt, size_t len,
                    m2c_status want, const char *mention) {
    fprintf(stderr, "%s: %s\n", o->name, label);
    m2c_status st;
    if (o->write) {
        st = o->write(h, layer, slots, n, data, dt, len);
    } else {
        /* Reads: data is the out buffer; it must come back untouched. */
        size_t bytes = len * dtype_size(dt);
        unsigned char *copy = NULL;
        int check_out = data != NULL && bytes > 0 && bytes < (1u << 20) && !out_not_readable;
        if (check_out) {
            copy = (unsigned char *)malloc(bytes);
            CHECK(copy != NULL);
            memcpy(copy, data, bytes);
        }
        st = o->read(h, layer, slots, n, (void *)(uintptr_t)data, dt, len);
        if (check_out) {
            if (memcmp(copy, data, bytes) != 0) {
                fprintf(stderr, "%s (%s): out was written by a failing call\n", o->name, label);
                exit(1);
            }
            free(copy);
        }
    }
    EXPECT_STATUS(st, want);
    EXPECT_ERROR_MENTIONS(o->name);
    if (mention) EXPECT_ERROR_MENTIONS(mention);
    EXPECT_UNCHANGED(cache, &before);
}

static void op_cases(const op *o) {
    const m2c_dtype dt = M2C_DTYPE_F32;
    const size_t per = o->per_row;
    const size_t n = 2, len = n * per;
    const int32_t slots[2] = {2, 0};
    /* f32 data for up to num_slots + 1 rows, with room for misalignment games. */
    const size_t cap = (C.num_slots + 1) * per + 16;
    unsigned char *raw = (unsigned char *)alloc_elems(M2C_DTYPE_F32, cap);
    float *data = (float *)raw;
    fill_values(data, M2C_DTYPE_F32, cap, 31);

    refused(o, "NULL cache", NULL, 0, slots, n, data, dt, len, M2C_STATUS_NULL_ARG, "cache");
    refused(o, "NULL data, len > 0", cache, 0, slots, n, NULL, dt, len, M2C_STATUS_NULL_ARG,
            "NULL");
    refused(o, "len + 1", cache, 0, slots, n, data, dt, len + 1, M2C_STATUS_SHAPE_MISMATCH,
            "len");
    refused(o, "len - 1", cache, 0, slots, n, data, dt, len - 1, M2C_STATUS_SHAPE_MISMATCH,
            "len");
    refused(o, "len 0", cache, 0, slots, n, data, dt, 0, M2C_STATUS_SHAPE_MISMATCH, "len");
    refused(o, "one row's len for two rows", cache, 0, slots, n, data, dt, per,
            M2C_STATUS_SHAPE_MISMATCH, "len");
    refused(o, "dtype 3", cache, 0, slots, n, data, 3, len, M2C_STATUS_UNSUPPORTED_DTYPE,
            "dtype");
    refused(o, "dtype UINT32_MAX", cache, 0, slots, n, data, UINT32_MAX, len,
            M2C_STATUS_UNSUPPORTED_DTYPE, "dtype");
    refused(o, "layer = num_layers", cache, C.num_layers, slots, n, data, dt, len,
            M2C_STATUS_OUT_OF_RANGE, "layer");
    refused(o, "layer UINT32_MAX", cache, UINT32_MAX, slots, n, data, dt, len,
            M2C_STATUS_OUT_OF_RANGE, "layer");
    refused(o, "f32 data at +2 bytes", cache, 0, slots, n, raw + 2, M2C_DTYPE_F32, len,
            M2C_STATUS_INVALID_ARG, "aligned");
    refused(o, "bf16 data at +1 byte", cache, 0, slots, n, raw + 1, M2C_DTYPE_BF16, len,
            M2C_STATUS_INVALID_ARG, "aligned");
    refused(o, "f16 data at +1 byte", cache, 0, slots, n, raw + 1, M2C_DTYPE_F16, len,
            M2C_STATUS_INVALID_ARG, "aligned");
    {
        /* A slot list at an odd address (never dereferenced here). */
        int32_t *slot_buf = (int32_t *)alloc_elems(M2C_DTYPE_F32, 4);
        memcpy((unsigned char *)slot_buf + 1, slots, sizeof slots);
        const int32_t *odd = (const int32_t *)(const void *)((unsigned char *)slot_buf + 1);
        refused(o, "misaligned slots", cache, 0, odd, n, data, dt, len, M2C_STATUS_INVALID_ARG,
                "slots");
        free(slot_buf);
    }
    {
        /* The data buffer is the cache's own storage of the layer. */
        m2c_dtype sdt;
        void *own = storage_of(o, 0, &sdt);
        refused(o, "data inside own storage", cache, 0, slots, n, own, sdt, len,
                M2C_STATUS_INVALID_ARG, "overlaps");
        out_not_readable = 1;
        refused(o, "data overlapping own storage by one element", cache, 0, slots, n,
                (const unsigned char *)own - (len - 1) * dtype_size(sdt), sdt, len,
                M2C_STATUS_INVALID_ARG, "overlaps");
        out_not_readable = 0;
        /* The slot list inside the storage: its first int32 is 0, slot 0. */
        if (o->write) {
            const int32_t *in_storage = (const int32_t *)own;
            CHECK(*in_storage == 0);
            refused(o, "slots inside own storage", cache, 0, in_storage, 1, data, dt, per,
                    M2C_STATUS_INVALID_ARG, "overlaps");
        }
    }
    const int32_t dup[3] = {0, 2, 0};
    refused(o, "duplicate slot", cache, 0, dup, 3, data, dt, 3 * per, M2C_STATUS_INVALID_ARG,
            "twice");
    const int32_t late_bad[3] = {0, 1, 9};
    refused(o, "out-of-range slot after valid ones", cache, 0, late_bad, 3, data, dt, 3 * per,
            M2C_STATUS_OUT_OF_RANGE, "slots[2]");
    const int32_t negative_pad_then_bad[2] = {-1, 4};
    refused(o, "slot == num_slots", cache, 0, negative_pad_then_bad, 2, data, dt, 2 * per,
            M2C_STATUS_OUT_OF_RANGE, "slots[1]");
    refused(o, "n > num_slots, slots NULL", cache, 0, NULL, C.num_slots + 1, data, dt,
            (C.num_slots + 1) * per, M2C_STATUS_OUT_OF_RANGE, "n = 5");
    free(raw);
}

int main(void) {
    C = small_config(3, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    cache = create_or_die(&C);
    const size_t dim = conv_dim_of(&C), cper = conv_slot_elems(&C), sper = ssm_slot_elems(&C);

    /* Non-zero state everywhere, then positions 1..4. */
    for (uint32_t l = 0; l < C.num_layers; l++) {
        void *w = alloc_elems(M2C_DTYPE_F32, C.num_slots * cper);
        void *s = alloc_elems(M2C_DTYPE_F32, C.num_slots * sper);
        fill_values(w, M2C_DTYPE_F32, C.num_slots * cper, 1 + l);
        fill_values(s, M2C_DTYPE_F32, C.num_slots * sper, 11 + l);
        EXPECT_OK(m2c_set_conv(cache, l, NULL, C.num_slots, w, M2C_DTYPE_F32, C.num_slots * cper));
        EXPECT_OK(m2c_update_ssm(cache, l, NULL, C.num_slots, s, M2C_DTYPE_F32,
                                 C.num_slots * sper));
        free(w);
        free(s);
        /* The first int32 of each layer's storage reads as slot 0 (see
         * "slots inside own storage"). */
        m2c_tensor t;
        EXPECT_OK(m2c_conv_view(cache, l, &t));
        memset(t.data, 0, 4);
        EXPECT_OK(m2c_ssm_view(cache, l, &t));
        memset(t.data, 0, 4);
    }
    for (int32_t s = 0; s < (int32_t)C.num_slots; s++)
        for (int32_t k = 0; k <= s; k++) EXPECT_OK(m2c_advance(cache, &s, 1, 1));
    before = take_snapshot(cache);

    const op ops[] = {
        {"m2c_update_conv", m2c_update_conv, NULL, 0, dim},
        {"m2c_set_conv", m2c_set_conv, NULL, 0, cper},
        {"m2c_update_ssm", m2c_update_ssm, NULL, 1, sper},
        {"m2c_read_conv", NULL, m2c_read_conv, 0, cper},
        {"m2c_read_ssm", NULL, m2c_read_ssm, 1, sper},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) op_cases(&ops[i]);

    /* reset / advance. */
    const int32_t dup[2] = {1, 1}, bad[2] = {1, 4};
    EXPECT_FAIL(m2c_reset(NULL, NULL, 1), M2C_STATUS_NULL_ARG, "m2c_reset", "cache");
    EXPECT_FAIL(m2c_reset(cache, dup, 2), M2C_STATUS_INVALID_ARG, "m2c_reset", "twice");
    EXPECT_FAIL(m2c_reset(cache, bad, 2), M2C_STATUS_OUT_OF_RANGE, "m2c_reset", "slots[1]");
    EXPECT_FAIL(m2c_reset(cache, NULL, 5), M2C_STATUS_OUT_OF_RANGE, "m2c_reset", "n = 5");
    EXPECT_UNCHANGED(cache, &before);
    EXPECT_FAIL(m2c_advance(NULL, NULL, 1, 1), M2C_STATUS_NULL_ARG, "m2c_advance", "cache");
    EXPECT_FAIL(m2c_advance(cache, dup, 2, 1), M2C_STATUS_INVALID_ARG, "m2c_advance", "twice");
    EXPECT_FAIL(m2c_advance(cache, bad, 2, 1), M2C_STATUS_OUT_OF_RANGE, "m2c_advance",
                "slots[1]");
    EXPECT_FAIL(m2c_advance(cache, NULL, 5, 1), M2C_STATUS_OUT_OF_RANGE, "m2c_advance",
                "n = 5");
    EXPECT_UNCHANGED(cache, &before);

    /* position. */
    uint64_t pos = 0xABCDu;
    EXPECT_FAIL(m2c_position(NULL, 0, &pos), M2C_STATUS_NULL_ARG, "m2c_position", "cache");
    EXPECT_FAIL(m2c_position(cache, 0, NULL), M2C_STATUS_NULL_ARG, "m2c_position", "out");
    EXPECT_FAIL(m2c_position(cache, -1, &pos), M2C_STATUS_OUT_OF_RANGE, "m2c_position", "-1");
    EXPECT_FAIL(m2c_position(cache, 4, &pos), M2C_STATUS_OUT_OF_RANGE, "m2c_position", "4");
    EXPECT_FAIL(m2c_position(cache, INT32_MIN, &pos), M2C_STATUS_OUT_OF_RANGE, "m2c_position",
                "slot");
    CHECK(pos == 0xABCDu);
    {
        /* A misaligned output pointer is refused and not written. */
        uint64_t storage[3];
        memset(storage, 0xEE, sizeof storage);
        unsigned char *bytes = (unsigned char *)storage;
        EXPECT_FAIL(m2c_position(cache, 0, (uint64_t *)(void *)(bytes + 1)),
                    M2C_STATUS_INVALID_ARG, "m2c_position", "aligned");
        EXPECT_FAIL(m2c_config_bytes(&C, (uint64_t *)(void *)(bytes + 4)), M2C_STATUS_INVALID_ARG,
                    "m2c_config_bytes", "aligned");
        for (size_t i = 0; i < sizeof storage; i++) CHECK(bytes[i] == 0xEE);
    }

    /* Views. */
    m2c_tensor t, t0;
    memset(&t, 0x5A, sizeof t);
    t0 = t;
    EXPECT_FAIL(m2c_conv_view(NULL, 0, &t), M2C_STATUS_NULL_ARG, "m2c_conv_view", "cache");
    EXPECT_FAIL(m2c_ssm_view(NULL, 0, &t), M2C_STATUS_NULL_ARG, "m2c_ssm_view", "cache");
    EXPECT_FAIL(m2c_conv_view(cache, 0, NULL), M2C_STATUS_NULL_ARG, "m2c_conv_view", "out");
    EXPECT_FAIL(m2c_ssm_view(cache, 0, NULL), M2C_STATUS_NULL_ARG, "m2c_ssm_view", "out");
    EXPECT_FAIL(m2c_conv_view(cache, 2, &t), M2C_STATUS_OUT_OF_RANGE, "m2c_conv_view", "layer");
    EXPECT_FAIL(m2c_ssm_view(cache, UINT32_MAX, &t), M2C_STATUS_OUT_OF_RANGE, "m2c_ssm_view",
                "layer");
    CHECK(memcmp(&t, &t0, sizeof t) == 0);
    EXPECT_UNCHANGED(cache, &before);

    /* Successful calls still work afterwards. */
    uint64_t p3 = 0;
    EXPECT_OK(m2c_position(cache, 3, &p3));
    CHECK(p3 == 4);

    free_snapshot(&before);
    m2c_destroy(cache);
    printf("bad input: ok\n");
    return 0;
}
