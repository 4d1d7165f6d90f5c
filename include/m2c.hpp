/*
 * m2c.hpp: a C++17 face for m2c.h, header-only, nothing but inline code over
 * the C ABI (link libm2c as for C).
 *
 *   m2c::cache       a move-only owner of an m2c_cache (RAII: destroyed by
 *                    its destructor), with a method per cache function
 *   m2c::error       thrown by every failing call: code() is an
 *                    m2c::status, what() names the C function, the status
 *                    and m2c_last_error()
 *   m2c::status, m2c::dtype, m2c::preset
 *                    enum classes over the C codes (same values)
 *   m2c::config      an m2c_config that starts from m2c_config_init() or a
 *                    preset
 *   m2c::in, m2c::out
 *                    a buffer and its dtype: from float (f32) pointers or
 *                    vectors, or m2c::in::bf16(bits, n) / ::f16(bits, n)
 *
 * A failing call leaves the cache as it was (m2c's contract) and throws;
 * nothing here catches. Thread safety, lifetimes and every argument's
 * meaning are those of the C function of the same name in m2c.h. Slot
 * lists are (pointer, count) as in C: NULL means rows 0..n-1, -1 a padding
 * row.
 *
 *   m2c::require_abi();                       // throws if header and library differ
 *   m2c::cache c(m2c::config(m2c::preset::mamba2_2_7b).slots(8));
 *   int32_t s = c.slot_acquire();
 *   c.conv_step(layer, &s, 1, m2c::in(xbc), m2c::out(xbc_out), conv_args);
 */
#ifndef M2C_HPP
#define M2C_HPP

#include "m2c.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace m2c {

/* The status codes of m2c.h (M2C_STATUS_*), same values. */
enum class status : int32_t {
    ok = M2C_STATUS_OK,
    null_arg = M2C_STATUS_NULL_ARG,
    invalid_arg = M2C_STATUS_INVALID_ARG,
    invalid_config = M2C_STATUS_INVALID_CONFIG,
    out_of_range = M2C_STATUS_OUT_OF_RANGE,
    shape_mismatch = M2C_STATUS_SHAPE_MISMATCH,
    unsupported_dtype = M2C_STATUS_UNSUPPORTED_DTYPE,
    out_of_memory = M2C_STATUS_OUT_OF_MEMORY,
    poisoned = M2C_STATUS_POISONED,
    panic = M2C_STATUS_PANIC,
    unsupported = M2C_STATUS_UNSUPPORTED,
    no_free_slot = M2C_STATUS_NO_FREE_SLOT,
    corrupt = M2C_STATUS_CORRUPT,
    incompatible = M2C_STATUS_INCOMPATIBLE,
    io = M2C_STATUS_IO,
    not_found = M2C_STATUS_NOT_FOUND,
};

/* Element types (M2C_DTYPE_*). */
enum class dtype : uint32_t {
    f32 = M2C_DTYPE_F32,
    bf16 = M2C_DTYPE_BF16,
    f16 = M2C_DTYPE_F16,
};

/* Model presets (M2C_PRESET_*): the Mamba2 layers of published models. */
enum class preset : uint32_t {
    mamba2_130m = M2C_PRESET_MAMBA2_130M,
    mamba2_370m = M2C_PRESET_MAMBA2_370M,
    mamba2_780m = M2C_PRESET_MAMBA2_780M,
    mamba2_1_3b = M2C_PRESET_MAMBA2_1_3B,
    mamba2_2_7b = M2C_PRESET_MAMBA2_2_7B,
    nemotron_h_8b = M2C_PRESET_NEMOTRON_H_8B,
    nemotron_nano_9b_v2 = M2C_PRESET_NEMOTRON_NANO_9B_V2,
    bamba_9b = M2C_PRESET_BAMBA_9B,
    granite_4_0_h_small = M2C_PRESET_GRANITE_4_0_H_SMALL,
    falcon_h1_7b = M2C_PRESET_FALCON_H1_7B,
    zamba2_1_2b = M2C_PRESET_ZAMBA2_1_2B,
};

/* The static text of a status (m2c_status_str). */
inline const char *to_string(status s) noexcept { return m2c_status_str(static_cast<m2c_status>(s)); }

/* A failed m2c call. */
class error : public std::runtime_error {
  public:
    error(m2c_status code, const char *function)
        : std::runtime_error(std::string(function) + ": " + m2c_status_str(code) + ": " + m2c_last_error()),
          code_(static_cast<status>(code)) {}
    status code() const noexcept { return code_; }

  private:
    status code_;
};

/* Throws m2c::error unless `code` is M2C_STATUS_OK. */
inline void check(m2c_status code, const char *function) {
    if (code != M2C_STATUS_OK) throw error(code, function);
}

/* Throws std::runtime_error if the loaded library's ABI or version is not
 * the one this header describes. Call once at start-up. */
inline void require_abi() {
    if (m2c_abi_version() != M2C_ABI_VERSION)
        throw std::runtime_error("m2c: the library has ABI version " + std::to_string(m2c_abi_version()) +
                                 ", m2c.h describes " + std::to_string(M2C_ABI_VERSION));
    if (std::strcmp(m2c_version(), M2C_VERSION_STRING) != 0)
        throw std::runtime_error(std::string("m2c: the library is version ") + m2c_version() + ", m2c.h is " +
                                 M2C_VERSION_STRING);
}

/* An m2c_config that starts from m2c_config_init() (Mamba2-130m shapes,
 * conv bf16, ssm f32) or from a preset; the setters chain. */
struct config : m2c_config {
    config() noexcept : m2c_config() { m2c_config_init(this); }
    explicit config(preset p) : config() { check(m2c_config_preset(this, static_cast<m2c_preset>(p)), "m2c_config_preset"); }
    config &slots(uint32_t n) noexcept { num_slots = n; return *this; }
    config &layers(uint32_t n) noexcept { num_layers = n; return *this; }
    config &conv_storage(dtype d) noexcept { conv_dtype = static_cast<m2c_dtype>(d); return *this; }
    config &ssm_storage(dtype d) noexcept { ssm_dtype = static_cast<m2c_dtype>(d); return *this; }
    /* conv_dim = intermediate_size + 2 * n_groups * state_size */
    std::size_t conv_dim() const noexcept { return std::size_t{intermediate_size} + 2u * std::size_t{n_groups} * state_size; }
    /* Elements of one slot's conv window and SSM state in one layer. */
    std::size_t conv_window_len() const noexcept { return conv_dim() * conv_width; }
    std::size_t ssm_state_len() const noexcept { return std::size_t{num_heads} * head_dim * state_size; }
    /* Bytes of the cache it describes (m2c_config_bytes). */
    uint64_t bytes() const { uint64_t b = 0; check(m2c_config_bytes(this, &b), "m2c_config_bytes"); return b; }
};

/* A read-only buffer: address, length in elements, dtype. */
struct in {
    const void *data;
    std::size_t len;
    m2c_dtype type;
    in(const float *p, std::size_t n) noexcept : data(p), len(n), type(M2C_DTYPE_F32) {}
    in(const std::vector<float> &v) noexcept : in(v.data(), v.size()) {}
    in(const void *p, std::size_t n, dtype d) noexcept : data(p), len(n), type(static_cast<m2c_dtype>(d)) {}
    static in bf16(const uint16_t *bits, std::size_t n) noexcept { return in(bits, n, dtype::bf16); }
    static in f16(const uint16_t *bits, std::size_t n) noexcept { return in(bits, n, dtype::f16); }
    static in none() noexcept { return in(static_cast<const float *>(nullptr), 0); }
};

/* A writable buffer: address, length in elements, dtype. */
struct out {
    void *data;
    std::size_t len;
    m2c_dtype type;
    out(float *p, std::size_t n) noexcept : data(p), len(n), type(M2C_DTYPE_F32) {}
    out(std::vector<float> &v) noexcept : out(v.data(), v.size()) {}
    out(void *p, std::size_t n, dtype d) noexcept : data(p), len(n), type(static_cast<m2c_dtype>(d)) {}
    static out bf16(uint16_t *bits, std::size_t n) noexcept { return out(bits, n, dtype::bf16); }
    static out f16(uint16_t *bits, std::size_t n) noexcept { return out(bits, n, dtype::f16); }
};

/* Owns one m2c_cache. Move-only; the destructor calls m2c_destroy. */
class cache {
  public:
    /* m2c_create */
    explicit cache(const m2c_config &cfg) { check(m2c_create(&cfg, &c_), "m2c_create"); }
    /* Takes ownership of a handle from m2c_create (NULL: an empty cache). */
    static cache adopt(m2c_cache *raw) noexcept { return cache(raw); }
    cache(cache &&o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    cache &operator=(cache &&o) noexcept {
        if (this != &o) {
            m2c_destroy(c_);
            c_ = std::exchange(o.c_, nullptr);
        }
        return *this;
    }
    cache(const cache &) = delete;
    cache &operator=(const cache &) = delete;
    ~cache() { m2c_destroy(c_); }

    /* The C handle (still owned here), and giving it up. */
    m2c_cache *get() const noexcept { return c_; }
    m2c_cache *release() noexcept { return std::exchange(c_, nullptr); }
    explicit operator bool() const noexcept { return c_ != nullptr; }

    /* m2c_get_config (into a config that m2c_config_init() prepared). */
    config get_config() const { config cfg; check(m2c_get_config(c_, &cfg), "m2c_get_config"); return cfg; }
    void set_num_threads(uint32_t n) { check(m2c_set_num_threads(c_, n), "m2c_set_num_threads"); }
    void set_stream(void *stream) { check(m2c_set_stream(c_, stream), "m2c_set_stream"); }
    /* m2c_describe, as a string. */
    std::string describe() const {
        std::size_t needed = 0;
        check(m2c_describe(c_, nullptr, 0, &needed), "m2c_describe");
        std::string s(needed, '\0');
        check(m2c_describe(c_, &s[0], s.size(), &needed), "m2c_describe");
        s.resize(needed - 1); /* without the NUL */
        return s;
    }

    /* --- state copies --- */
    void update_conv(uint32_t layer, const int32_t *slots, std::size_t n, in x) {
        check(m2c_update_conv(c_, layer, slots, n, x.data, x.type, x.len), "m2c_update_conv");
    }
    void set_conv(uint32_t layer, const int32_t *slots, std::size_t n, in window) {
        check(m2c_set_conv(c_, layer, slots, n, window.data, window.type, window.len), "m2c_set_conv");
    }
    void set_ssm(uint32_t layer, const int32_t *slots, std::size_t n, in state) {
        check(m2c_set_ssm(c_, layer, slots, n, state.data, state.type, state.len), "m2c_set_ssm");
    }
    void read_conv(uint32_t layer, const int32_t *slots, std::size_t n, out window) const {
        check(m2c_read_conv(c_, layer, slots, n, window.data, window.type, window.len), "m2c_read_conv");
    }
    void read_ssm(uint32_t layer, const int32_t *slots, std::size_t n, out state) const {
        check(m2c_read_ssm(c_, layer, slots, n, state.data, state.type, state.len), "m2c_read_ssm");
    }
    m2c_tensor conv_view(uint32_t layer) { m2c_tensor t; check(m2c_conv_view(c_, layer, &t), "m2c_conv_view"); return t; }
    m2c_tensor ssm_view(uint32_t layer) { m2c_tensor t; check(m2c_ssm_view(c_, layer, &t), "m2c_ssm_view"); return t; }

    /* --- positions --- */
    void reset(const int32_t *slots, std::size_t n) { check(m2c_reset(c_, slots, n), "m2c_reset"); }
    void advance(const int32_t *slots, std::size_t n, uint32_t tokens) {
        check(m2c_advance(c_, slots, n, tokens), "m2c_advance");
    }
    uint64_t position(int32_t slot) const { uint64_t p = 0; check(m2c_position(c_, slot, &p), "m2c_position"); return p; }

    /* --- kernels (the buffers' dtype must be args.io_dtype) --- */
    void conv_step(uint32_t layer, const int32_t *slots, std::size_t n, in x, out y, const m2c_conv_args &args) {
        check(m2c_conv_step(c_, layer, slots, n, x.data, x.len, y.data, y.len, &args), "m2c_conv_step");
    }
    void ssm_step(uint32_t layer, const int32_t *slots, std::size_t n, const m2c_ssm_io &io, const m2c_ssm_args &args) {
        check(m2c_ssm_step(c_, layer, slots, n, &io, &args), "m2c_ssm_step");
    }
    /* `cu_seqlens` has n + 1 entries. */
    void conv_prefill(uint32_t layer, const int32_t *slots, std::size_t n, const uint64_t *cu_seqlens, in x, out y,
                      const m2c_conv_args &args) {
        check(m2c_conv_prefill(c_, layer, slots, n, cu_seqlens, n + 1, x.data, x.len, y.data, y.len, &args),
              "m2c_conv_prefill");
    }
    void ssm_prefill(uint32_t layer, const int32_t *slots, std::size_t n, const uint64_t *cu_seqlens,
                     const m2c_ssm_io &io, const m2c_ssm_args &args) {
        check(m2c_ssm_prefill(c_, layer, slots, n, cu_seqlens, n + 1, &io, &args), "m2c_ssm_prefill");
    }

    /* --- speculative decoding (m2c_spec_*, m2c_*_verify) --- */
    void spec_reserve(uint32_t max_tokens) { check(m2c_spec_reserve(c_, max_tokens), "m2c_spec_reserve"); }
    /* `cu_seqlens` has n + 1 entries; `parents` NULL (and 0) for chains. */
    void spec_begin(const int32_t *slots, std::size_t n, const uint64_t *cu_seqlens, const int32_t *parents = nullptr,
                    std::size_t parents_len = 0) {
        check(m2c_spec_begin(c_, slots, n, cu_seqlens, n + 1, parents, parents_len), "m2c_spec_begin");
    }
    void conv_verify(uint32_t layer, in x, out y, const m2c_conv_args &args) {
        check(m2c_conv_verify(c_, layer, x.data, x.len, y.data, y.len, &args), "m2c_conv_verify");
    }
    void ssm_verify(uint32_t layer, const m2c_ssm_io &io, const m2c_ssm_args &args) {
        check(m2c_ssm_verify(c_, layer, &io, &args), "m2c_ssm_verify");
    }
    /* `accepted` has n entries. */
    void spec_commit(const int32_t *slots, std::size_t n, const uint32_t *accepted) {
        check(m2c_spec_commit(c_, slots, n, accepted), "m2c_spec_commit");
    }

    /* --- slots --- */
    int32_t slot_acquire() { int32_t s = -1; check(m2c_slot_acquire(c_, &s), "m2c_slot_acquire"); return s; }
    void slot_release(int32_t slot) { check(m2c_slot_release(c_, slot), "m2c_slot_release"); }
    uint32_t slots_in_use() const { uint32_t n = 0; check(m2c_slots_in_use(c_, &n), "m2c_slots_in_use"); return n; }
    void copy_slots(const int32_t *src, const int32_t *dst, std::size_t n) {
        check(m2c_copy_slots(c_, src, dst, n), "m2c_copy_slots");
    }
    uint64_t count_nonfinite(int32_t slot) const {
        uint64_t n = 0;
        check(m2c_count_nonfinite(c_, slot, &n), "m2c_count_nonfinite");
        return n;
    }

    /* --- snapshots and files --- */
    std::size_t snapshot_size() const { std::size_t n = 0; check(m2c_slot_snapshot_size(c_, &n), "m2c_slot_snapshot_size"); return n; }
    std::vector<uint8_t> slot_save(int32_t slot) const {
        std::vector<uint8_t> buf(snapshot_size());
        std::size_t written = 0;
        check(m2c_slot_save(c_, slot, buf.data(), buf.size(), &written), "m2c_slot_save");
        buf.resize(written);
        return buf;
    }
    void slot_load(int32_t slot, const void *buf, std::size_t len) { check(m2c_slot_load(c_, slot, buf, len), "m2c_slot_load"); }
    void slot_load(int32_t slot, const std::vector<uint8_t> &snap) { slot_load(slot, snap.data(), snap.size()); }
    void save_file(const std::string &path) const { check(m2c_save_file(c_, path.c_str()), "m2c_save_file"); }
    void load_file(const std::string &path) { check(m2c_load_file(c_, path.c_str()), "m2c_load_file"); }

    /* --- state transfer --- */
    /* m2c_arenas: two per layer (conv windows, SSM states). */
    std::vector<m2c_arena> arenas() const {
        std::size_t n = 0;
        check(m2c_arenas(c_, nullptr, 0, &n), "m2c_arenas");
        std::vector<m2c_arena> out(n);
        check(m2c_arenas(c_, out.data(), out.size(), &n), "m2c_arenas");
        return out;
    }
    /* m2c_slot_regions for slots[0..n). */
    std::vector<m2c_region> slot_regions(const int32_t *slots, std::size_t n) const {
        std::size_t need = 0;
        check(m2c_slot_regions(c_, slots, n, nullptr, 0, &need), "m2c_slot_regions");
        std::vector<m2c_region> out(need);
        check(m2c_slot_regions(c_, slots, n, out.data(), out.size(), &need), "m2c_slot_regions");
        return out;
    }
    uint64_t slot_digest(int32_t slot) const {
        uint64_t d = 0;
        check(m2c_slot_digest(c_, slot, &d), "m2c_slot_digest");
        return d;
    }

  private:
    explicit cache(m2c_cache *raw) noexcept : c_(raw) {}
    m2c_cache *c_ = nullptr;
};

/* The key of a block of token ids after the block keyed *prev (nullptr: a
 * prompt's first block): m2c_key_chain. */
inline m2c_key chain_key(const m2c_key *prev, const int32_t *tokens, std::size_t n) {
    m2c_key k;
    check(m2c_key_chain(prev, tokens, n, &k), "m2c_key_chain");
    return k;
}

/* Rank `rank` of a `tp_size`-way tensor-parallel layout of `full`: its
 * config (create the rank's cache with it) and what it holds
 * (m2c_shard_config). */
struct shard_result {
    config cfg;
    m2c_shard shard;
};
inline shard_result shard_config(const m2c_config &full, uint32_t tp_size, uint32_t rank) {
    shard_result r;
    m2c_shard_init(&r.shard);
    check(m2c_shard_config(&full, tp_size, rank, &r.cfg, &r.shard), "m2c_shard_config");
    return r;
}

/* The runs moving one slot from tp_src ranks to tp_dst ranks (m2c_reshard_plan). */
inline std::vector<m2c_reshard_copy> reshard_plan(const m2c_config &full, uint32_t tp_src, uint32_t tp_dst) {
    std::size_t n = 0;
    check(m2c_reshard_plan(&full, tp_src, tp_dst, nullptr, 0, &n), "m2c_reshard_plan");
    std::vector<m2c_reshard_copy> out(n);
    check(m2c_reshard_plan(&full, tp_src, tp_dst, out.data(), out.size(), &n), "m2c_reshard_plan");
    return out;
}

/* One slot's snapshots resharded from src.size() ranks to tp_dst ranks
 * (m2c_snapshot_reshard). */
inline std::vector<std::vector<uint8_t>> reshard_snapshots(const m2c_config &full, const std::vector<std::vector<uint8_t>> &src,
                                                           uint32_t tp_dst) {
    std::vector<std::vector<uint8_t>> dst(tp_dst);
    std::vector<const void *> sp;
    std::vector<std::size_t> sl, dl;
    std::vector<void *> dp;
    for (const auto &b : src) sp.push_back(b.data()), sl.push_back(b.size());
    for (uint32_t r = 0; r < tp_dst; r++) {
        dst[r].resize(static_cast<std::size_t>(shard_config(full, tp_dst, r).shard.snapshot_bytes));
        dp.push_back(dst[r].data()), dl.push_back(dst[r].size());
    }
    check(m2c_snapshot_reshard(&full, static_cast<uint32_t>(src.size()), sp.data(), sl.data(), tp_dst, dp.data(), dl.data()),
          "m2c_snapshot_reshard");
    return dst;
}

/* What store::lookup found (m2c_lookup without struct_size). */
struct lookup_result {
    std::size_t blocks;
    m2c_miss miss;
};

/* Owns one m2c_store (the prefix store). Move-only; the destructor calls
 * m2c_store_destroy. Budget 0 (and remember_misses UINT64_MAX) keep the
 * library's defaults. */
class store {
  public:
    explicit store(uint64_t budget_bytes = 0, uint64_t remember_misses = UINT64_MAX, m2c_tier tier = M2C_TIER_FULL) {
        m2c_store_config cfg;
        m2c_store_config_init(&cfg);
        if (budget_bytes != 0) cfg.budget_bytes = budget_bytes;
        if (remember_misses != UINT64_MAX) cfg.remember_misses = remember_misses;
        cfg.tier = tier;
        check(m2c_store_create(&cfg, &s_), "m2c_store_create");
    }
    store(store &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    store &operator=(store &&o) noexcept {
        if (this != &o) {
            m2c_store_destroy(s_);
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    store(const store &) = delete;
    store &operator=(const store &) = delete;
    ~store() { m2c_store_destroy(s_); }
    m2c_store *get() const noexcept { return s_; }

    /* m2c_store_insert: M2C_MISS_TOO_LARGE when it cannot fit (nothing
     * stored), else M2C_MISS_NONE. */
    m2c_miss insert(const cache &c, int32_t slot, const m2c_key &key) {
        m2c_miss miss = M2C_MISS_NONE;
        check(m2c_store_insert(s_, c.get(), slot, &key, &miss), "m2c_store_insert");
        return miss;
    }
    lookup_result lookup(const cache &c, const m2c_key *keys, std::size_t n) {
        m2c_lookup out;
        m2c_lookup_init(&out);
        check(m2c_store_lookup(s_, c.get(), keys, n, &out), "m2c_store_lookup");
        return {static_cast<std::size_t>(out.blocks), out.miss};
    }
    void restore(const m2c_key &key, cache &c, int32_t slot) {
        check(m2c_store_restore(s_, &key, c.get(), slot), "m2c_store_restore");
    }
    void pin(const m2c_key &key) { check(m2c_store_pin(s_, &key), "m2c_store_pin"); }
    void unpin(const m2c_key &key) { check(m2c_store_unpin(s_, &key), "m2c_store_unpin"); }
    void evict(const m2c_key &key) { check(m2c_store_evict(s_, &key), "m2c_store_evict"); }
    /* m2c_capture_begin: checkpoints of c to capture inside the prefills
     * that follow, for this store (n = 0 cancels). */
    void capture_begin(cache &c, const m2c_capture_point *points, std::size_t n) {
        check(m2c_capture_begin(c.get(), s_, points, n), "m2c_capture_begin");
    }
    /* m2c_capture_end for the n points c declared: one miss per point. */
    std::vector<m2c_miss> capture_end(cache &c, std::size_t n) {
        std::vector<m2c_miss> out(n, M2C_MISS_NONE);
        check(m2c_capture_end(c.get(), s_, n ? out.data() : nullptr, n), "m2c_capture_end");
        return out;
    }
    m2c_store_stats stats() const {
        m2c_store_stats st;
        m2c_store_stats_init(&st);
        check(m2c_store_get_stats(s_, &st), "m2c_store_get_stats");
        return st;
    }

  private:
    m2c_store *s_ = nullptr;
};

}  // namespace m2c

#endif /* M2C_HPP */
