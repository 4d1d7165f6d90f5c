/* The bodies of the helpers declared in ../common.h, compiled once into the
 * m2c_test_support library that every C test links. */
#include "../common.h"

void fail_at(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    fprintf(stderr, "  m2c_last_error(): \"%s\"\n", m2c_last_error());
    exit(1);
}

m2c_status expect_status_at(const char *file, int line, const char *call,
                            m2c_status got, m2c_status want) {
    if (got != want) {
        fprintf(stderr, "%s:%d: %s\n  returned %d (%s), expected %d (%s)\n", file, line, call,
                (int)got, m2c_status_str(got), (int)want, m2c_status_str(want));
        fprintf(stderr, "  m2c_last_error(): \"%s\"\n", m2c_last_error());
        exit(1);
    }
    return got;
}

void expect_error_mentions_at(const char *file, int line, const char *needle) {
    const char *e = m2c_last_error();
    if (e == NULL || strstr(e, needle) == NULL) {
        fprintf(stderr, "%s:%d: m2c_last_error() should mention \"%s\" but is \"%s\"\n", file,
                line, needle, e ? e : "(NULL)");
        exit(1);
    }
}

const char *dtype_name(m2c_dtype d) {
    switch (d) {
        case M2C_DTYPE_F32: return "f32";
        case M2C_DTYPE_BF16: return "bf16";
        case M2C_DTYPE_F16: return "f16";
        default: return "?";
    }
}

size_t dtype_size(m2c_dtype d) { return d == M2C_DTYPE_F32 ? 4 : 2; }

uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t bf16_from_f32_exact(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0xFFFFu) != 0) {
        fprintf(stderr, "test bug: %a is not exactly representable in bf16\n", (double)f);
        exit(2);
    }
    return (uint16_t)(u >> 16);
}

float f32_from_bf16(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t f16_from_f32_exact(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xFF);
    uint32_t man = u & 0x7FFFFFu;
    if (exp == 0 && man == 0) return (uint16_t)sign;
    exp = exp - 127 + 15;
    if (exp <= 0 || exp >= 31 || (man & 0x1FFFu) != 0) {
        fprintf(stderr, "test bug: %a is not an exactly representable normal f16\n", (double)f);
        exit(2);
    }
    return (uint16_t)(sign | ((uint32_t)exp << 10) | (man >> 13));
}

float f32_from_f16(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)h >> 10) & 0x1Fu;
    uint32_t man = (uint32_t)h & 0x3FFu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7F800000u | (man << 13));
    return f32_from_bits(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

void store_elem(void *buf, m2c_dtype d, size_t i, float v) {
    switch (d) {
        case M2C_DTYPE_F32: ((float *)buf)[i] = v; break;
        case M2C_DTYPE_BF16: ((uint16_t *)buf)[i] = bf16_from_f32_exact(v); break;
        case M2C_DTYPE_F16: ((uint16_t *)buf)[i] = f16_from_f32_exact(v); break;
        default: fprintf(stderr, "test bug: dtype %u\n", (unsigned)d); exit(2);
    }
}

float load_elem(const void *buf, m2c_dtype d, size_t i) {
    switch (d) {
        case M2C_DTYPE_F32: return ((const float *)buf)[i];
        case M2C_DTYPE_BF16: return f32_from_bf16(((const uint16_t *)buf)[i]);
        case M2C_DTYPE_F16: return f32_from_f16(((const uint16_t *)buf)[i]);
        default: fprintf(stderr, "test bug: dtype %u\n", (unsigned)d); exit(2);
    }
}

float test_value(uint32_t seed, size_t i) {
    uint32_t h = seed * 2654435761u + (uint32_t)i * 40503u + 12345u;
    h ^= h >> 13;
    int32_t k = (int32_t)(h % 254u) - 127; /* -127..126 */
    if (k == 0) k = 127;
    return (float)k * 0.25f;
}

void fill_values(void *buf, m2c_dtype d, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) store_elem(buf, d, i, test_value(seed, i));
}

void *alloc_elems(m2c_dtype d, size_t n) {
    size_t bytes = n * dtype_size(d);
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    CHECK(p != NULL);
    memset(p, 0xA5, rounded ? rounded : 64);
    return p;
}

m2c_config small_config(uint32_t conv_width, m2c_dtype conv_dtype,
                        m2c_dtype ssm_dtype) {
    m2c_config c;
    m2c_config_init(&c);
    c.num_layers = 2;
    c.num_slots = 4;
    c.num_heads = 4;
    c.head_dim = 2;
    c.intermediate_size = 8;
    c.state_size = 2;
    c.n_groups = 2;
    c.conv_kernel_size = 4;
    c.conv_width = conv_width;
    c.conv_dtype = conv_dtype;
    c.ssm_dtype = ssm_dtype;
    return c;
}

size_t conv_dim_of(const m2c_config *c) {
    return (size_t)c->intermediate_size + 2u * (size_t)c->n_groups * (size_t)c->state_size;
}

size_t conv_slot_elems(const m2c_config *c) {
    return conv_dim_of(c) * c->conv_width;
}

size_t ssm_slot_elems(const m2c_config *c) {
    return (size_t)c->num_heads * c->head_dim * c->state_size;
}

m2c_cache *create_or_die(const m2c_config *c) {
    m2c_cache *cache = NULL;
    EXPECT_OK(m2c_create(c, &cache));
    CHECK(cache != NULL);
    return cache;
}

size_t view_bytes(const m2c_tensor *t) {
    size_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n * dtype_size(t->dtype);
}

snapshot take_snapshot(m2c_cache *cache) {
    m2c_config c;
    m2c_config_init(&c);
    EXPECT_OK(m2c_get_config(cache, &c));
    snapshot s;
    s.len = 0;
    for (uint32_t l = 0; l < c.num_layers; l++) {
        m2c_tensor cv, sv;
        EXPECT_OK(m2c_conv_view(cache, l, &cv));
        EXPECT_OK(m2c_ssm_view(cache, l, &sv));
        s.len += view_bytes(&cv) + view_bytes(&sv);
    }
    s.bytes = (unsigned char *)malloc(s.len);
    CHECK(s.bytes != NULL);
    size_t off = 0;
    for (uint32_t l = 0; l < c.num_layers; l++) {
        m2c_tensor cv, sv;
        EXPECT_OK(m2c_conv_view(cache, l, &cv));
        EXPECT_OK(m2c_ssm_view(cache, l, &sv));
        memcpy(s.bytes + off, cv.data, view_bytes(&cv));
        off += view_bytes(&cv);
        memcpy(s.bytes + off, sv.data, view_bytes(&sv));
        off += view_bytes(&sv);
    }
    s.num_slots = c.num_slots;
    s.positions = (uint64_t *)malloc(sizeof(uint64_t) * c.num_slots);
    CHECK(s.positions != NULL);
    for (uint32_t i = 0; i < c.num_slots; i++)
        EXPECT_OK(m2c_position(cache, (int32_t)i, &s.positions[i]));
    return s;
}

int snapshots_equal(const snapshot *a, const snapshot *b) {
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0 &&
           a->num_slots == b->num_slots &&
           memcmp(a->positions, b->positions, sizeof(uint64_t) * a->num_slots) == 0;
}

void free_snapshot(snapshot *s) {
    free(s->bytes);
    free(s->positions);
    s->bytes = NULL;
    s->positions = NULL;
}

void expect_unchanged_at(const char *file, int line, m2c_cache *cache,
                         const snapshot *before) {
    snapshot now = take_snapshot(cache);
    if (!snapshots_equal(before, &now)) {
        fprintf(stderr, "%s:%d: a failing call changed the cache\n", file, line);
        exit(1);
    }
    free_snapshot(&now);
}

void fill_cache(m2c_cache *cache, uint32_t seed) {
    m2c_config c;
    m2c_config_init(&c);
    EXPECT_OK(m2c_get_config(cache, &c));
    const size_t n = c.num_slots, cper = conv_slot_elems(&c), sper = ssm_slot_elems(&c);
    void *w = alloc_elems(M2C_DTYPE_F32, n * cper);
    void *st = alloc_elems(M2C_DTYPE_F32, n * sper);
    for (uint32_t l = 0; l < c.num_layers; l++) {
        fill_values(w, M2C_DTYPE_F32, n * cper, seed * 64u + 2u * l);
        fill_values(st, M2C_DTYPE_F32, n * sper, seed * 64u + 2u * l + 1u);
        EXPECT_OK(m2c_set_conv(cache, l, NULL, n, w, M2C_DTYPE_F32, n * cper));
        EXPECT_OK(m2c_update_ssm(cache, l, NULL, n, st, M2C_DTYPE_F32, n * sper));
    }
    free(w);
    free(st);
    for (int32_t s = 0; s < (int32_t)n; s++)
        EXPECT_OK(m2c_advance(cache, &s, 1, seed * 1000u + 10u * (uint32_t)s + 1u));
}

size_t conv_slot_bytes(const m2c_config *c) {
    return conv_slot_elems(c) * dtype_size(c->conv_dtype);
}

size_t ssm_slot_bytes(const m2c_config *c) {
    return ssm_slot_elems(c) * dtype_size(c->ssm_dtype);
}

size_t snapshot_conv_offset(const m2c_config *c, uint32_t l, size_t s) {
    const size_t layer = c->num_slots * (conv_slot_bytes(c) + ssm_slot_bytes(c));
    return l * layer + s * conv_slot_bytes(c);
}

size_t snapshot_ssm_offset(const m2c_config *c, uint32_t l, size_t s) {
    const size_t layer = c->num_slots * (conv_slot_bytes(c) + ssm_slot_bytes(c));
    return l * layer + c->num_slots * conv_slot_bytes(c) + s * ssm_slot_bytes(c);
}

snapshot copy_snapshot(const snapshot *s) {
    snapshot t = *s;
    t.bytes = (unsigned char *)malloc(s->len);
    t.positions = (uint64_t *)malloc(sizeof(uint64_t) * s->num_slots);
    CHECK(t.bytes != NULL && t.positions != NULL);
    memcpy(t.bytes, s->bytes, s->len);
    memcpy(t.positions, s->positions, sizeof(uint64_t) * s->num_slots);
    return t;
}

int slots_equal_across(const m2c_config *cx, const snapshot *x, size_t a,
                       const m2c_config *cy, const snapshot *y, size_t b) {
    CHECK(cx->num_layers == cy->num_layers && conv_slot_bytes(cx) == conv_slot_bytes(cy) &&
          ssm_slot_bytes(cx) == ssm_slot_bytes(cy));
    CHECK(a < x->num_slots && b < y->num_slots);
    for (uint32_t l = 0; l < cx->num_layers; l++) {
        if (memcmp(x->bytes + snapshot_conv_offset(cx, l, a),
                   y->bytes + snapshot_conv_offset(cy, l, b), conv_slot_bytes(cx)) != 0)
            return 0;
        if (memcmp(x->bytes + snapshot_ssm_offset(cx, l, a),
                   y->bytes + snapshot_ssm_offset(cy, l, b), ssm_slot_bytes(cx)) != 0)
            return 0;
    }
    return x->positions[a] == y->positions[b];
}

int slots_equal(const m2c_config *c, const snapshot *x, size_t a, const snapshot *y,
                size_t b) {
    return slots_equal_across(c, x, a, c, y, b);
}

int slot_is_zeroed(const m2c_config *c, const snapshot *x, size_t s) {
    for (uint32_t l = 0; l < c->num_layers; l++) {
        const unsigned char *cv = x->bytes + snapshot_conv_offset(c, l, s);
        const unsigned char *sv = x->bytes + snapshot_ssm_offset(c, l, s);
        for (size_t i = 0; i < conv_slot_bytes(c); i++)
            if (cv[i] != 0) return 0;
        for (size_t i = 0; i < ssm_slot_bytes(c); i++)
            if (sv[i] != 0) return 0;
    }
    return x->positions[s] == 0;
}

uint32_t slots_in_use_or_die(const m2c_cache *cache) {
    uint32_t n = UINT32_MAX;
    EXPECT_OK(m2c_slots_in_use(cache, &n));
    return n;
}

uint32_t acquired_mask_destructive(m2c_cache *cache) {
    m2c_config c;
    m2c_config_init(&c);
    EXPECT_OK(m2c_get_config(cache, &c));
    CHECK(c.num_slots <= 32);
    const uint32_t all = c.num_slots == 32 ? UINT32_MAX : ((1u << c.num_slots) - 1u);
    const uint32_t count = slots_in_use_or_die(cache);
    uint32_t free_mask = 0;
    int32_t last = -1, s = -7;
    m2c_status st;
    while ((st = m2c_slot_acquire(cache, &s)) == M2C_STATUS_OK) {
        CHECK(s > last && s < (int32_t)c.num_slots);
        free_mask |= 1u << s;
        last = s;
    }
    EXPECT_STATUS(st, M2C_STATUS_NO_FREE_SLOT);
    for (uint32_t i = 0; i < c.num_slots; i++)
        if (free_mask & (1u << i)) EXPECT_OK(m2c_slot_release(cache, (int32_t)i));
    const uint32_t mask = all & ~free_mask;
    CHECK(slots_in_use_or_die(cache) == count);
    uint32_t bits = 0;
    for (uint32_t i = 0; i < 32; i++) bits += (mask >> i) & 1u;
    CHECK(bits == count);
    return mask;
}

snapshot expected_copy(const m2c_config *c, const snapshot *before,
                       const int32_t *src, const int32_t *dst, size_t n) {
    snapshot want = copy_snapshot(before);
    for (size_t i = 0; i < n; i++) {
        if (dst[i] < 0) continue;
        const size_t s = (size_t)src[i], d = (size_t)dst[i];
        CHECK(s < c->num_slots && d < c->num_slots);
        for (uint32_t l = 0; l < c->num_layers; l++) {
            memcpy(want.bytes + snapshot_conv_offset(c, l, d),
                   before->bytes + snapshot_conv_offset(c, l, s), conv_slot_bytes(c));
            memcpy(want.bytes + snapshot_ssm_offset(c, l, d),
                   before->bytes + snapshot_ssm_offset(c, l, s), ssm_slot_bytes(c));
        }
        want.positions[d] = before->positions[s];
    }
    return want;
}

void expect_snapshot_at(const char *file, int line, m2c_cache *cache,
                        const snapshot *want) {
    snapshot now = take_snapshot(cache);
    if (!snapshots_equal(want, &now)) {
        fprintf(stderr, "%s:%d: the cache differs from the expected state\n", file, line);
        exit(1);
    }
    free_snapshot(&now);
}
