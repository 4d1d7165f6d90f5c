// Proves: include/m2c.hpp (the C++17 face) works over the C ABI: configs
// from init and presets, RAII and moves, errors as m2c::error with the
// right code and the C function's name (and the cache unchanged after
// them), copies, slots, snapshots, describe, and the kernels (prefill ==
// steps, bit for bit, through the wrapper). ctests/CMakeLists.txt checks at
// configure time that the enums name every M2C_STATUS_*, M2C_DTYPE_* and
// M2C_PRESET_* of m2c.h.
#include "m2c.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static int failures = 0;
#define EXPECT(cond)                                                                 \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

// Runs `f`, which must throw m2c::error with `code` naming `function`.
template <class F>
static void expect_error(F f, m2c::status code, const char *function, int line) {
    try {
        f();
        std::fprintf(stderr, "line %d: no exception\n", line);
        failures++;
    } catch (const m2c::error &e) {
        if (e.code() != code || std::strstr(e.what(), function) == nullptr) {
            std::fprintf(stderr, "line %d: wrong error (%d): %s\n", line, static_cast<int>(e.code()), e.what());
            failures++;
        }
    }
}
#define EXPECT_ERROR(expr, code, fn) expect_error([&] { expr; }, code, fn, __LINE__)

static m2c::config small() {
    m2c::config c;
    c.num_layers = 2;
    c.num_slots = 4;
    c.intermediate_size = 16;
    c.num_heads = 4;
    c.head_dim = 4;
    c.state_size = 8;
    c.n_groups = 2;
    c.conv_kernel_size = 4;
    c.conv_width = 3;
    c.conv_dtype = M2C_DTYPE_F32;
    return c;
}

static void configs() {
    m2c::config d;
    m2c_config ref;
    m2c_config_init(&ref);
    EXPECT(std::memcmp(static_cast<m2c_config *>(&d), &ref, sizeof ref) == 0);
    m2c::config big(m2c::preset::mamba2_2_7b);
    EXPECT(m2c_config_preset(&ref, M2C_PRESET_MAMBA2_2_7B) == M2C_STATUS_OK);
    EXPECT(std::memcmp(static_cast<m2c_config *>(&big), &ref, sizeof ref) == 0);
    EXPECT(big.num_layers == 64 && big.conv_dim() == 5120 + 2 * 128);
    EXPECT(big.slots(8).num_slots == 8);
    uint64_t bytes = 0;
    EXPECT(m2c_config_bytes(&big, &bytes) == M2C_STATUS_OK && big.bytes() == bytes);
    EXPECT_ERROR(m2c::config(static_cast<m2c::preset>(99)), m2c::status::invalid_arg, "m2c_config_preset");
    m2c::config bad = small();
    bad.num_heads = 3;  // does not divide intermediate_size
    EXPECT_ERROR(m2c::cache c(bad), m2c::status::invalid_config, "m2c_create");
    EXPECT(std::string(m2c::to_string(m2c::status::corrupt)) == m2c_status_str(M2C_STATUS_CORRUPT));
}

static void raii_copies_slots_snapshots() {
    const m2c::config cfg = small();
    m2c::cache a(cfg);
    EXPECT(static_cast<bool>(a));
    EXPECT(a.describe().find("2 layers x 4 slots") != std::string::npos);
    const m2c::config got = a.get_config();
    EXPECT(std::memcmp(static_cast<const m2c_config *>(&got), static_cast<const m2c_config *>(&cfg), sizeof(m2c_config)) == 0);
    const std::size_t cd = cfg.conv_dim();
    std::vector<float> x(2 * cd), win(2 * cfg.conv_window_len());
    for (std::size_t i = 0; i < x.size(); i++) x[i] = 0.25f * static_cast<float>(i + 1);
    const int32_t rows[2] = {3, -1};
    a.update_conv(1, rows, 2, m2c::in(x));
    a.advance(rows, 2, 1);
    a.read_conv(1, rows, 2, m2c::out(win));
    EXPECT(win[cfg.conv_width - 1] == x[0]);  // newest column of slot 3, channel 0
    EXPECT(a.position(3) == 1 && a.position(0) == 0);

    // A failing call throws, names the function, and changes nothing.
    EXPECT_ERROR(a.update_conv(9, rows, 2, m2c::in(x)), m2c::status::out_of_range, "m2c_update_conv");
    std::vector<float> short_buf(cd);
    EXPECT_ERROR(a.update_conv(1, rows, 2, m2c::in(short_buf)), m2c::status::shape_mismatch, "m2c_update_conv");
    std::vector<float> again(win.size());
    a.read_conv(1, rows, 2, m2c::out(again));
    EXPECT(again == win);

    // bf16 in, f32 out: converted.
    std::vector<uint16_t> bits(2 * cd, 0x3f80);  // 1.0
    a.update_conv(1, rows, 2, m2c::in::bf16(bits.data(), bits.size()));
    a.read_conv(1, rows, 2, m2c::out(win));
    EXPECT(win[cfg.conv_width - 1] == 1.0f);

    // Moves hand the handle over; the moved-from cache is empty.
    m2c::cache b(std::move(a));
    EXPECT(!a && a.get() == nullptr && b);
    EXPECT(b.position(3) == 1);
    m2c::cache c(cfg);
    c = std::move(b);  // destroys c's own cache
    EXPECT(!b && c.position(3) == 1);

    // Slots and snapshots.
    const int32_t s = c.slot_acquire();
    EXPECT(s == 0 && c.slots_in_use() == 1);
    std::vector<uint8_t> snap = c.slot_save(3);
    EXPECT(snap.size() == c.snapshot_size());
    c.slot_load(s, snap);
    c.read_conv(1, &s, 1, m2c::out(win.data(), cfg.conv_window_len()));
    EXPECT(win[cfg.conv_width - 1] == 1.0f && c.position(s) == 1);
    snap[snap.size() / 2] ^= 1;
    EXPECT_ERROR(c.slot_load(s, snap), m2c::status::corrupt, "m2c_slot_load");
    EXPECT(c.position(s) == 1);
    c.slot_release(s);
    EXPECT_ERROR(c.slot_release(s), m2c::status::invalid_arg, "m2c_slot_release");
    EXPECT(c.count_nonfinite(3) == 0);
    c.set_num_threads(1);

    // release() gives the handle up; adopt() takes it back.
    m2c_cache *raw = c.release();
    EXPECT(!c && raw != nullptr);
    m2c::cache d = m2c::cache::adopt(raw);
    EXPECT(d.position(3) == 1);
}

static void kernels_prefill_equals_steps() {
    const m2c::config cfg = small();
    const std::size_t cd = cfg.conv_dim(), K = cfg.conv_kernel_size;
    const std::size_t H = cfg.num_heads, P = cfg.head_dim, GN = std::size_t{cfg.n_groups} * cfg.state_size;
    std::vector<float> w(cd * K), bias(cd), A(H), D(H, 1.0f), dtb(H, 0.1f);
    for (std::size_t i = 0; i < w.size(); i++) w[i] = std::sin(0.37f * static_cast<float>(i));
    for (std::size_t i = 0; i < cd; i++) bias[i] = 0.01f * static_cast<float>(i % 7);
    for (std::size_t h = 0; h < H; h++) A[h] = -std::exp(0.3f * static_cast<float>(h));
    m2c_conv_args ca;
    m2c_conv_args_init(&ca);
    ca.weight = w.data();
    ca.weight_len = w.size();
    ca.bias = bias.data();
    ca.bias_len = bias.size();
    m2c_ssm_args sa;
    m2c_ssm_args_init(&sa);
    sa.A = A.data();
    sa.A_len = H;
    sa.D = D.data();
    sa.D_len = H;
    sa.dt_bias = dtb.data();
    sa.dt_bias_len = H;

    // Two sequences of 3 and 2 tokens, into slots 1 and 2.
    const int32_t slots[2] = {1, 2};
    const uint64_t cu[3] = {0, 3, 5};
    const std::size_t T = 5;
    std::vector<float> x(T * cd), dt(T * H), z(T * H * P);
    for (std::size_t i = 0; i < x.size(); i++) x[i] = std::cos(0.11f * static_cast<float>(i));
    for (std::size_t i = 0; i < dt.size(); i++) dt[i] = 0.05f * static_cast<float>(i % 5);
    for (std::size_t i = 0; i < z.size(); i++) z[i] = std::sin(0.07f * static_cast<float>(i));

    // SSM inputs from the conv outputs: x | B | C of each row.
    auto ssm_io = [&](const float *conv_out, std::size_t rows, const float *dtp, const float *zp, float *y,
                      std::vector<float> &xs, std::vector<float> &Bs, std::vector<float> &Cs) {
        xs.resize(rows * H * P);
        Bs.resize(rows * GN);
        Cs.resize(rows * GN);
        for (std::size_t r = 0; r < rows; r++) {
            std::memcpy(&xs[r * H * P], conv_out + r * cd, H * P * sizeof(float));
            std::memcpy(&Bs[r * GN], conv_out + r * cd + H * P, GN * sizeof(float));
            std::memcpy(&Cs[r * GN], conv_out + r * cd + H * P + GN, GN * sizeof(float));
        }
        m2c_ssm_io io;
        m2c_ssm_io_init(&io);
        io.x = xs.data();
        io.x_len = xs.size();
        io.dt = dtp;
        io.dt_len = rows * H;
        io.B = Bs.data();
        io.B_len = Bs.size();
        io.C = Cs.data();
        io.C_len = Cs.size();
        io.z = zp;
        io.z_len = rows * H * P;
        io.y = y;
        io.y_len = rows * H * P;
        return io;
    };

    m2c::cache pre(cfg), step(cfg);
    std::vector<float> xo(T * cd), y_pre(T * H * P), xs, Bs, Cs;
    pre.conv_prefill(0, slots, 2, cu, m2c::in(x), m2c::out(xo), ca);
    m2c_ssm_io io = ssm_io(xo.data(), T, dt.data(), z.data(), y_pre.data(), xs, Bs, Cs);
    pre.ssm_prefill(0, slots, 2, cu, io, sa);

    std::vector<float> y_step(T * H * P), xo1(cd);
    for (int s = 0; s < 2; s++) {
        for (uint64_t t = cu[s]; t < cu[s + 1]; t++) {
            step.conv_step(0, &slots[s], 1, m2c::in(&x[t * cd], cd), m2c::out(xo1), ca);
            m2c_ssm_io one = ssm_io(xo1.data(), 1, &dt[t * H], &z[t * H * P], &y_step[t * H * P], xs, Bs, Cs);
            step.ssm_step(0, &slots[s], 1, one, sa);
        }
    }
    EXPECT(std::memcmp(y_pre.data(), y_step.data(), y_pre.size() * sizeof(float)) == 0);
    std::vector<float> st_pre(2 * cfg.ssm_state_len()), st_step(st_pre.size());
    pre.read_ssm(0, slots, 2, m2c::out(st_pre));
    step.read_ssm(0, slots, 2, m2c::out(st_step));
    EXPECT(std::memcmp(st_pre.data(), st_step.data(), st_pre.size() * sizeof(float)) == 0);
    bool any = false;
    for (float v : st_pre) any = any || v != 0.0f;
    EXPECT(any);

    // A speculative round through the wrapper: verify the same tokens from
    // a cache in step's pre-round state, commit all of them: the same state.
    {
        m2c::cache spec(cfg);
        spec.spec_reserve(3);
        const uint64_t cu3[2] = {0, 3};
        spec.spec_begin(&slots[0], 1, cu3);
        std::vector<float> xo3(3 * cd), y3(3 * H * P);
        spec.conv_verify(0, m2c::in(x.data(), 3 * cd), m2c::out(xo3), ca);
        m2c_ssm_io io3 = ssm_io(xo3.data(), 3, dt.data(), z.data(), y3.data(), xs, Bs, Cs);
        spec.ssm_verify(0, io3, sa);
        EXPECT(std::memcmp(y3.data(), y_pre.data(), y3.size() * sizeof(float)) == 0);  // slot 1's rows
        spec.ssm_verify(1, io3, sa);
        spec.conv_verify(1, m2c::in(x.data(), 3 * cd), m2c::out(xo3), ca);
        const uint32_t all3 = 3;
        spec.spec_commit(&slots[0], 1, &all3);
        std::vector<float> got(cfg.ssm_state_len()), want(cfg.ssm_state_len());
        spec.read_ssm(0, &slots[0], 1, m2c::out(got));
        pre.read_ssm(0, &slots[0], 1, m2c::out(want));
        EXPECT(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
        EXPECT(spec.position(1) == 3);
        EXPECT_ERROR(spec.spec_commit(&slots[0], 1, &all3), m2c::status::invalid_arg, "m2c_spec_commit");
    }

    // A kernel error comes back as m2c::error too.
    ca.weight_len = 1;
    EXPECT_ERROR(pre.conv_step(0, slots, 1, m2c::in(&x[0], cd), m2c::out(xo1), ca), m2c::status::shape_mismatch,
                 "m2c_conv_step");
}

// The prefix store: insert, lookup, restore, a miss as m2c::error.
static void prefix_store() {
    m2c::config cfg;
    cfg.num_layers = 2;
    cfg.num_slots = 3;
    cfg.intermediate_size = 8;
    cfg.num_heads = 2;
    cfg.head_dim = 4;
    cfg.state_size = 4;
    cfg.n_groups = 1;
    m2c::cache c(cfg);
    std::vector<float> st(cfg.ssm_state_len(), 0.25f);
    const int32_t one = 1;
    c.set_ssm(0, &one, 1, m2c::in(st));
    c.advance(&one, 1, 5);
    const int32_t toks[3] = {7, 8, 9};
    const m2c_key k = m2c::chain_key(nullptr, toks, 3), k2 = m2c::chain_key(&k, toks, 3);
    m2c::store s(1u << 20);
    EXPECT(s.insert(c, 1, k) == M2C_MISS_NONE);
    const m2c_key keys[2] = {k, k2};
    const m2c::lookup_result l = s.lookup(c, keys, 2);
    EXPECT(l.blocks == 1 && l.miss == M2C_MISS_NEVER_STORED);
    s.restore(k, c, 2);
    std::vector<float> got(cfg.ssm_state_len());
    const int32_t two = 2;
    c.read_ssm(0, &two, 1, m2c::out(got));
    EXPECT(got == st && c.position(2) == 5);
    EXPECT_ERROR(s.restore(k2, c, 0), m2c::status::not_found, "m2c_store_restore");
    EXPECT(s.stats().inserts == 1 && s.stats().restores == 1);
    // State transfer: arenas, regions, digest.
    EXPECT(c.arenas().size() == 2 * cfg.num_layers);
    EXPECT(c.slot_regions(&two, 1).size() == 2 * cfg.num_layers);
    EXPECT(c.slot_digest(2) == c.slot_digest(1));  // slot 2 was restored from slot 1's checkpoint
    EXPECT_ERROR(c.slot_digest(7), m2c::status::out_of_range, "m2c_slot_digest");
    {
        /* Tensor-parallel shards: split a snapshot for 2 ranks and merge it back. */
        const m2c_config full = c.get_config();
        const auto half = m2c::shard_config(full, 2, 1);
        EXPECT(half.cfg.num_heads == full.num_heads / 2 && half.shard.rank == 1);
        EXPECT(!m2c::reshard_plan(full, 1, 2).empty());
        const std::vector<std::vector<uint8_t>> one{c.slot_save(1)};
        const auto two = m2c::reshard_snapshots(full, one, 2);
        EXPECT(two.size() == 2 && m2c::reshard_snapshots(full, two, 1)[0] == one[0]);
        EXPECT_ERROR(m2c::shard_config(full, 2, 2), m2c::status::out_of_range, "m2c_shard_config");
    }
    // A capture declared and ended with nothing reached is refused.
    const m2c_capture_point pt = {0, 2, k2};
    s.capture_begin(c, &pt, 1);
    EXPECT_ERROR(s.capture_end(c, 1), m2c::status::invalid_arg, "m2c_capture_end");
    s.capture_begin(c, nullptr, 0);
    EXPECT(s.capture_end(c, 0).empty());
}

int main() {
    try {
        m2c::require_abi();
        configs();
        raii_copies_slots_snapshots();
        kernels_prefill_equals_steps();
        prefix_store();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    std::printf("m2c.hpp: ok\n");
    return 0;
}
