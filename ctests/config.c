/*
 * Proves: m2c_config_init fills the documented Mamba2-130m defaults;
 * m2c_config_bytes matches a byte count computed here (each layer buffer
 * rounded up to 64 bytes); every invalid configuration is refused with the
 * documented status and a message naming the field, by both
 * m2c_config_bytes and m2c_create, and no output is written on failure.
 */
#include "common.h"

static uint64_t round64(uint64_t v) { return (v + 63) / 64 * 64; }

/* The documented storage size, computed independently of the library. */
static uint64_t expected_bytes(const m2c_config *c) {
    uint64_t conv_dim = (uint64_t)c->intermediate_size + 2ull * c->n_groups * c->state_size;
    uint64_t conv = round64(conv_dim * c->conv_width * c->num_slots * dtype_size(c->conv_dtype));
    uint64_t ssm = round64((uint64_t)c->num_heads * c->head_dim * c->state_size * c->num_slots *
                           dtype_size(c->ssm_dtype));
    return (conv + ssm) * c->num_layers;
}

static const uint64_t BYTES_SENTINEL = 0xDEADBEEFCAFEF00Dull;
static char cache_sentinel_object;
#define CACHE_SENTINEL ((m2c_cache *)(void *)&cache_sentinel_object)

/* cfg is refused by m2c_config_bytes and m2c_create with want, the message
 * mentions field, and neither output is written. */
static void expect_refused(const char *label, const m2c_config *cfg, m2c_status want,
                           const char *field) {
    uint64_t bytes = BYTES_SENTINEL;
    m2c_cache *out = CACHE_SENTINEL;
    fprintf(stderr, "case %s\n", label);
    EXPECT_FAIL(m2c_config_bytes(cfg, &bytes), want, "m2c_config_bytes", field);
    CHECK(bytes == BYTES_SENTINEL);
    EXPECT_FAIL(m2c_create(cfg, &out), want, "m2c_create", field);
    CHECK(out == CACHE_SENTINEL);
}

int main(void) {
    /* Defaults. */
    m2c_config d;
    memset(&d, 0x5A, sizeof d);
    m2c_config_init(&d);
    CHECK(d.struct_size == sizeof(m2c_config));
    CHECK(d.num_layers == 24);
    CHECK(d.num_slots == 1);
    CHECK(d.intermediate_size == 1536);
    CHECK(d.num_heads == 24);
    CHECK(d.head_dim == 64);
    CHECK(d.state_size == 128);
    CHECK(d.n_groups == 1);
    CHECK(d.conv_kernel_size == 4);
    CHECK(d.conv_width == 4);
    CHECK(d.conv_dtype == M2C_DTYPE_BF16);
    CHECK(d.ssm_dtype == M2C_DTYPE_F32);
    CHECK(d.device == M2C_DEVICE_CPU);
    CHECK(d.device_index == 0);
    m2c_config_init(NULL); /* no-op, no crash */

    /* Byte counts: the default, worked by hand as well. */
    uint64_t bytes = 0;
    EXPECT_OK(m2c_config_bytes(&d, &bytes));
    CHECK(bytes == expected_bytes(&d));
    CHECK(bytes == 24ull * (1792ull * 4 * 2 + 24ull * 64 * 128 * 4));

    /* A custom config whose buffers need rounding: conv 5*2*3*2 = 60 -> 64,
     * ssm 3*1*1*3*2 = 18 -> 64, three layers -> 384. */
    m2c_config c = d;
    c.num_layers = 3;
    c.num_slots = 3;
    c.num_heads = 3;
    c.head_dim = 1;
    c.intermediate_size = 3;
    c.state_size = 1;
    c.n_groups = 1;
    c.conv_kernel_size = 3;
    c.conv_width = 2;
    c.conv_dtype = M2C_DTYPE_BF16;
    c.ssm_dtype = M2C_DTYPE_F16;
    EXPECT_OK(m2c_config_bytes(&c, &bytes));
    CHECK(bytes == 384);
    CHECK(bytes == expected_bytes(&c));

    /* Every dtype pair and both conv layouts of the small test shape. */
    for (int w = 0; w < 2; w++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                m2c_config s = small_config(4 - (uint32_t)w, ALL_DTYPES[a], ALL_DTYPES[b]);
                s.num_slots = 7;
                EXPECT_OK(m2c_config_bytes(&s, &bytes));
                CHECK(bytes == expected_bytes(&s));
            }

    /* NULL arguments. */
    bytes = BYTES_SENTINEL;
    EXPECT_FAIL(m2c_config_bytes(NULL, &bytes), M2C_STATUS_NULL_ARG, "m2c_config_bytes", "cfg");
    CHECK(bytes == BYTES_SENTINEL);
    EXPECT_FAIL(m2c_config_bytes(&d, NULL), M2C_STATUS_NULL_ARG, "m2c_config_bytes",
                "out_bytes");
    m2c_cache *out = CACHE_SENTINEL;
    EXPECT_FAIL(m2c_create(NULL, &out), M2C_STATUS_NULL_ARG, "m2c_create", "cfg");
    CHECK(out == CACHE_SENTINEL);
    EXPECT_FAIL(m2c_create(&d, NULL), M2C_STATUS_NULL_ARG, "m2c_create", "out");

    /* Each field zero. */
    {
        static const char *names[] = {"num_layers", "num_slots",  "intermediate_size",
                                      "num_heads",  "head_dim",   "state_size",
                                      "n_groups",   "conv_kernel_size", "conv_width"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            m2c_config z = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
            uint32_t *fields[] = {&z.num_layers, &z.num_slots,        &z.intermediate_size,
                                  &z.num_heads,  &z.head_dim,         &z.state_size,
                                  &z.n_groups,   &z.conv_kernel_size, &z.conv_width};
            *fields[i] = 0;
            expect_refused(names[i], &z, M2C_STATUS_INVALID_CONFIG, names[i]);
        }
    }

    /* Broken invariants. */
    m2c_config x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    x.intermediate_size = 9; /* != 4 * 2 */
    expect_refused("intermediate != heads*head_dim", &x, M2C_STATUS_INVALID_CONFIG,
                   "intermediate_size");

    x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    x.n_groups = 3; /* 4 heads % 3 != 0 */
    expect_refused("heads % groups", &x, M2C_STATUS_INVALID_CONFIG, "n_groups");

    x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    x.conv_kernel_size = 1;
    x.conv_width = 1;
    expect_refused("kernel < 2", &x, M2C_STATUS_INVALID_CONFIG, "conv_kernel_size");

    x = small_config(2, M2C_DTYPE_BF16, M2C_DTYPE_F32); /* K - 2 */
    expect_refused("conv_width K-2", &x, M2C_STATUS_INVALID_CONFIG, "conv_width");
    x = small_config(5, M2C_DTYPE_BF16, M2C_DTYPE_F32); /* K + 1 */
    expect_refused("conv_width K+1", &x, M2C_STATUS_INVALID_CONFIG, "conv_width");

    x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    x.num_slots = 1u << 31;
    expect_refused("num_slots 2^31", &x, M2C_STATUS_INVALID_CONFIG, "num_slots");
    x.num_slots = UINT32_MAX;
    expect_refused("num_slots 2^32-1", &x, M2C_STATUS_INVALID_CONFIG, "num_slots");

    x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    x.device_index = -1;
    expect_refused("device_index -1", &x, M2C_STATUS_INVALID_CONFIG, "device_index");
    /* The CPU has only index 0: m2c_config_bytes refuses it as m2c_create
     * does (it once returned OK: RELIABILITY-FINDINGS 17). */
    x.device_index = 1;
    expect_refused("device_index 1 on the CPU", &x, M2C_STATUS_INVALID_CONFIG, "device_index");

    /* struct_size the library does not know. */
    const uint32_t bad_sizes[] = {0, sizeof(m2c_config) - 4, sizeof(m2c_config) + 8, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
        x.struct_size = bad_sizes[i];
        expect_refused("struct_size", &x, M2C_STATUS_INVALID_ARG, "struct_size");
    }

    /* Unknown dtype codes. */
    x = small_config(4, 3, M2C_DTYPE_F32);
    expect_refused("conv_dtype 3", &x, M2C_STATUS_UNSUPPORTED_DTYPE, "conv_dtype");
    x = small_config(4, M2C_DTYPE_BF16, UINT32_MAX);
    expect_refused("ssm_dtype max", &x, M2C_STATUS_UNSUPPORTED_DTYPE, "ssm_dtype");

    /* Devices: an unknown code is a bad config; CUDA is not in this build. */
    x = small_config(4, M2C_DTYPE_BF16, M2C_DTYPE_F32);
    x.device = 2;
    expect_refused("device 2", &x, M2C_STATUS_INVALID_CONFIG, "device");
    x.device = UINT32_MAX;
    expect_refused("device max", &x, M2C_STATUS_INVALID_CONFIG, "device");
    x.device = M2C_DEVICE_CUDA;
    out = CACHE_SENTINEL;
    EXPECT_FAIL(m2c_create(&x, &out), M2C_STATUS_UNSUPPORTED, "m2c_create", "CUDA");
    CHECK(out == CACHE_SENTINEL);

    /* After all of that, a valid config still creates a cache. */
    m2c_config ok = small_config(3, M2C_DTYPE_F16, M2C_DTYPE_BF16);
    m2c_cache *cache = create_or_die(&ok);
    m2c_destroy(cache);

    printf("config: ok\n");
    return 0;
}
