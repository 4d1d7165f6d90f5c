// A C++17 consumer of an installed m2c through its C++ face, m2c.hpp (from
// the prefix, like m2c.h): the RAII m2c::cache, failures as m2c::error
// carrying the status code and the C function's name, and a real round
// trip: create, set, read back, snapshot a slot and restore it, destroy.
// Prints one "OK" line on success.
#include <m2c.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void expect(bool cond, const char *what) {
    if (!cond) throw std::runtime_error(std::string("expectation failed: ") + what);
}

void run() {
    m2c::require_abi();

    m2c::config cfg;
    cfg.num_layers = 3;
    cfg.num_slots = 2;
    cfg.num_heads = 2;
    cfg.head_dim = 8;
    cfg.intermediate_size = 16;
    cfg.state_size = 4;
    cfg.n_groups = 1;
    cfg.conv_kernel_size = 4;
    cfg.conv_width = 3;  // the vLLM / llama.cpp layout
    cfg.conv_storage(m2c::dtype::f32).ssm_storage(m2c::dtype::f32);
    const std::size_t win_len = cfg.conv_window_len();
    const std::size_t ssm_len = cfg.ssm_state_len();

    m2c::cache cache(cfg);
    const m2c_config back = cache.get_config();
    expect(back.num_layers == 3 && back.conv_width == 3, "config round trip");

    const int32_t slot = cache.slot_acquire();
    expect(slot == 0, "first acquired slot is 0");

    // Fill every layer of the slot, read it back exactly.
    for (uint32_t layer = 0; layer < cfg.num_layers; layer++) {
        std::vector<float> win(win_len), ssm(ssm_len);
        for (std::size_t i = 0; i < win_len; i++) win[i] = float(layer) + float(i) * 0.5f;
        for (std::size_t i = 0; i < ssm_len; i++) ssm[i] = float(layer) - float(i) * 0.125f;
        cache.set_conv(layer, &slot, 1, m2c::in(win));
        cache.set_ssm(layer, &slot, 1, m2c::in(ssm));
        std::vector<float> win_back(win_len), ssm_back(ssm_len);
        cache.read_conv(layer, &slot, 1, m2c::out(win_back));
        cache.read_ssm(layer, &slot, 1, m2c::out(ssm_back));
        expect(win_back == win, "conv window round trip");
        expect(ssm_back == ssm, "ssm state round trip");
    }
    cache.advance(&slot, 1, 7);

    // Snapshot slot 0, load it into slot 1, compare.
    std::vector<uint8_t> snap = cache.slot_save(slot);
    expect(snap.size() == cache.snapshot_size(), "snapshot size");
    cache.slot_load(1, snap);
    expect(cache.position(1) == 7, "position restored from the snapshot");
    for (uint32_t layer = 0; layer < cfg.num_layers; layer++) {
        const int32_t both[2] = {0, 1};
        std::vector<float> ssm2(2 * ssm_len);
        cache.read_ssm(layer, both, 2, m2c::out(ssm2));
        expect(std::memcmp(ssm2.data(), ssm2.data() + ssm_len, ssm_len * sizeof(float)) == 0,
               "snapshot restores the ssm state");
    }

    // A damaged snapshot is refused and changes nothing.
    snap[snap.size() / 2] ^= 0xff;
    try {
        cache.slot_load(1, snap);
        throw std::runtime_error("a damaged snapshot was accepted");
    } catch (const m2c::error &e) {
        expect(e.code() == m2c::status::corrupt, "damaged snapshot -> m2c::status::corrupt");
        expect(std::string(e.what()).find("m2c_slot_load") != std::string::npos,
               "the error names the function");
    }
    expect(cache.position(1) == 7, "a refused load changes nothing");

    // Errors as exceptions: a layer out of range.
    try {
        std::vector<float> out(win_len);
        cache.read_conv(99, &slot, 1, m2c::out(out));
        throw std::runtime_error("layer 99 was accepted");
    } catch (const m2c::error &e) {
        expect(e.code() == m2c::status::out_of_range, "layer 99 -> m2c::status::out_of_range");
        expect(std::strlen(m2c::to_string(e.code())) > 0, "status text");
    }

    // A config that breaks an invariant: the constructor throws, nothing leaks.
    m2c::config bad = cfg;
    bad.intermediate_size = 17;
    try {
        m2c::cache never(bad);
        throw std::runtime_error("an invalid config was accepted");
    } catch (const m2c::error &e) {
        expect(e.code() == m2c::status::invalid_config, "bad config -> m2c::status::invalid_config");
    }

    cache.slot_release(slot);
    expect(cache.slots_in_use() == 0, "no slot in use after release");

    // Moving the cache transfers ownership.
    m2c::cache moved = std::move(cache);
    expect(!cache && moved, "move");
    expect(moved.describe().find("3 layers x 2 slots") != std::string::npos, "describe");
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
