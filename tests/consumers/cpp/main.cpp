// A C++17 consumer of an installed m2c: an RAII handle (std::unique_ptr with
// a custom deleter), failures turned into exceptions that carry the status
// code, its text and the thread's last error, and a real round trip:
// create, update, read back, snapshot a slot and restore it, destroy.
// Prints one "OK" line on success.
#include <m2c.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace m2c {

class Error : public std::runtime_error {
  public:
    Error(m2c_status status, const std::string &what)
        : std::runtime_error(what + ": " + m2c_status_str(status) + ": " + m2c_last_error()),
          status_(status) {}
    m2c_status status() const noexcept { return status_; }

  private:
    m2c_status status_;
};

inline void check(m2c_status s, const char *what) {
    if (s != M2C_STATUS_OK) throw Error(s, what);
}

struct CacheDeleter {
    void operator()(m2c_cache *c) const noexcept { m2c_destroy(c); }
};
using CachePtr = std::unique_ptr<m2c_cache, CacheDeleter>;

inline CachePtr create(const m2c_config &cfg) {
    m2c_cache *raw = nullptr;
    check(m2c_create(&cfg, &raw), "m2c_create");
    return CachePtr(raw);
}

inline void require_abi() {
    if (m2c_abi_version() != M2C_ABI_VERSION)
        throw std::runtime_error("m2c ABI mismatch: header " + std::to_string(M2C_ABI_VERSION) +
                                 ", library " + std::to_string(m2c_abi_version()));
    if (std::strcmp(m2c_version(), M2C_VERSION_STRING) != 0)
        throw std::runtime_error(std::string("m2c version mismatch: header ") +
                                 M2C_VERSION_STRING + ", library " + m2c_version());
}

}  // namespace m2c

namespace {

void expect(bool cond, const char *what) {
    if (!cond) throw std::runtime_error(std::string("expectation failed: ") + what);
}

void run() {
    m2c::require_abi();

    m2c_config cfg;
    m2c_config_init(&cfg);
    cfg.num_layers = 3;
    cfg.num_slots = 2;
    cfg.num_heads = 2;
    cfg.head_dim = 8;
    cfg.intermediate_size = 16;
    cfg.state_size = 4;
    cfg.n_groups = 1;
    cfg.conv_kernel_size = 4;
    cfg.conv_width = 3;  // the vLLM / llama.cpp layout
    cfg.conv_dtype = M2C_DTYPE_F32;
    cfg.ssm_dtype = M2C_DTYPE_F32;
    const std::size_t conv_dim = cfg.intermediate_size + 2u * cfg.n_groups * cfg.state_size;
    const std::size_t win_len = conv_dim * cfg.conv_width;
    const std::size_t ssm_len = std::size_t{cfg.num_heads} * cfg.head_dim * cfg.state_size;

    m2c::CachePtr cache = m2c::create(cfg);

    m2c_config back;
    m2c_config_init(&back);
    m2c::check(m2c_get_config(cache.get(), &back), "m2c_get_config");
    expect(back.num_layers == 3 && back.conv_width == 3, "config round trip");

    int32_t slot = -1;
    m2c::check(m2c_slot_acquire(cache.get(), &slot), "m2c_slot_acquire");
    expect(slot == 0, "first acquired slot is 0");

    // Fill every layer of the slot, read it back exactly.
    for (uint32_t layer = 0; layer < cfg.num_layers; layer++) {
        std::vector<float> win(win_len), ssm(ssm_len);
        for (std::size_t i = 0; i < win_len; i++) win[i] = float(layer) + float(i) * 0.5f;
        for (std::size_t i = 0; i < ssm_len; i++) ssm[i] = float(layer) - float(i) * 0.125f;
        m2c::check(m2c_set_conv(cache.get(), layer, &slot, 1, win.data(), M2C_DTYPE_F32, win.size()),
                   "m2c_set_conv");
        m2c::check(m2c_update_ssm(cache.get(), layer, &slot, 1, ssm.data(), M2C_DTYPE_F32, ssm.size()),
                   "m2c_update_ssm");
        std::vector<float> win_back(win_len), ssm_back(ssm_len);
        m2c::check(m2c_read_conv(cache.get(), layer, &slot, 1, win_back.data(), M2C_DTYPE_F32,
                                 win_back.size()),
                   "m2c_read_conv");
        m2c::check(m2c_read_ssm(cache.get(), layer, &slot, 1, ssm_back.data(), M2C_DTYPE_F32,
                                ssm_back.size()),
                   "m2c_read_ssm");
        expect(win_back == win, "conv window round trip");
        expect(ssm_back == ssm, "ssm state round trip");
    }
    m2c::check(m2c_advance(cache.get(), &slot, 1, 7), "m2c_advance");

    // Snapshot slot 0, load it into slot 1, compare.
    std::size_t snap_size = 0;
    m2c::check(m2c_slot_snapshot_size(cache.get(), &snap_size), "m2c_slot_snapshot_size");
    std::vector<unsigned char> snap(snap_size);
    std::size_t written = 0;
    m2c::check(m2c_slot_save(cache.get(), slot, snap.data(), snap.size(), &written), "m2c_slot_save");
    expect(written == snap_size, "snapshot size");
    m2c::check(m2c_slot_load(cache.get(), 1, snap.data(), snap.size()), "m2c_slot_load");
    uint64_t pos = 0;
    m2c::check(m2c_position(cache.get(), 1, &pos), "m2c_position");
    expect(pos == 7, "position restored from the snapshot");
    for (uint32_t layer = 0; layer < cfg.num_layers; layer++) {
        const int32_t both[2] = {0, 1};
        std::vector<float> ssm2(2 * ssm_len);
        m2c::check(m2c_read_ssm(cache.get(), layer, both, 2, ssm2.data(), M2C_DTYPE_F32, ssm2.size()),
                   "m2c_read_ssm");
        expect(std::memcmp(ssm2.data(), ssm2.data() + ssm_len, ssm_len * sizeof(float)) == 0,
               "snapshot restores the ssm state");
    }

    // A damaged snapshot is refused and changes nothing.
    snap[snap.size() / 2] ^= 0xff;
    try {
        m2c::check(m2c_slot_load(cache.get(), 1, snap.data(), snap.size()), "m2c_slot_load");
        throw std::runtime_error("a damaged snapshot was accepted");
    } catch (const m2c::Error &e) {
        expect(e.status() == M2C_STATUS_CORRUPT, "damaged snapshot -> M2C_STATUS_CORRUPT");
        expect(std::string(e.what()).find("m2c_slot_load") != std::string::npos,
               "the error names the function");
    }

    // Errors as exceptions: a layer out of range.
    try {
        std::vector<float> out(win_len);
        m2c::check(m2c_read_conv(cache.get(), 99, &slot, 1, out.data(), M2C_DTYPE_F32, out.size()),
                   "m2c_read_conv");
        throw std::runtime_error("layer 99 was accepted");
    } catch (const m2c::Error &e) {
        expect(e.status() == M2C_STATUS_OUT_OF_RANGE, "layer 99 -> M2C_STATUS_OUT_OF_RANGE");
        expect(std::strlen(m2c_status_str(e.status())) > 0, "status text");
    }

    // A config that breaks an invariant: the RAII factory throws, nothing leaks.
    m2c_config bad = cfg;
    bad.intermediate_size = 17;
    try {
        m2c::CachePtr never = m2c::create(bad);
        throw std::runtime_error("an invalid config was accepted");
    } catch (const m2c::Error &e) {
        expect(e.status() == M2C_STATUS_INVALID_CONFIG, "bad config -> M2C_STATUS_INVALID_CONFIG");
    }

    m2c::check(m2c_slot_release(cache.get(), slot), "m2c_slot_release");
    uint32_t in_use = 99;
    m2c::check(m2c_slots_in_use(cache.get(), &in_use), "m2c_slots_in_use");
    expect(in_use == 0, "no slot in use after release");

    // Moving the handle transfers ownership; reset() destroys it.
    m2c::CachePtr moved = std::move(cache);
    expect(!cache && moved, "unique_ptr move");
    moved.reset();
}

}  // namespace

int main() {
    try {
        run();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "m2c consumer (C++): FAILED: %s\n", e.what());
        return 1;
    }
    std::printf("m2c consumer (C++17): OK, m2c %s, ABI %u\n", m2c_version(),
                static_cast<unsigned>(m2c_abi_version()));
    return 0;
}
