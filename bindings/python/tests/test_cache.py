"""Every Cache method: marshalling, results against an f64 reference,
bit-identity where m2c promises it, and error mapping (status, message,
nothing changed)."""

import os

import numpy as np
import pytest

import m2c
from conftest import CD, G, H, I, K, N, P, Params, conv_ref, f32, small_config, ssm_ref


def state(cache, layer=0):
    return cache.read_conv(layer).copy(), cache.read_ssm(layer).copy()


def test_config_defaults_presets_and_bytes():
    c = m2c.Config()
    assert c.conv_dtype == "bf16" and c.ssm_dtype == "f32" and c.device == "cpu"
    for name in m2c.PRESETS:
        p = m2c.Config.preset(name, num_slots=2)
        assert p.num_slots == 2 and p.bytes() > 0
        assert p.conv_dim == p.intermediate_size + 2 * p.n_groups * p.state_size
    p = m2c.Config.preset("mamba2-130m")
    assert (p.num_layers, p.num_heads, p.head_dim, p.state_size) == (24, 24, 64, 128)
    assert p.replace(num_slots=3).num_slots == 3 and p.num_slots != 3 or p.num_slots == 3
    with pytest.raises(ValueError, match="unknown preset"):
        m2c.Config.preset("mamba3")
    with pytest.raises(ValueError, match="no field"):
        m2c.Config(num_layer=2)
    with pytest.raises(ValueError, match="unknown dtype"):
        m2c.Cache(small_config(conv_dtype="f64"))
    bad = small_config(num_heads=3)
    with pytest.raises(m2c.InvalidConfig) as e:
        bad.bytes()
    assert e.value.status == m2c.STATUS_INVALID_CONFIG == 3
    assert "n_groups" in e.value.message or "num_heads" in e.value.message
    with pytest.raises(m2c.InvalidConfig):
        m2c.Cache(bad)
    cfg = small_config()
    assert m2c.Cache(cfg).config == cfg
    assert small_config().as_dict()["num_heads"] == H


def test_create_by_preset_close_and_context_manager():
    with m2c.Cache(preset="mamba2-130m", num_slots=2, num_layers=1) as c:
        assert c.config.num_layers == 1 and c.config.intermediate_size == 1536
        assert "1 layers x 2 slots" in repr(c)
        assert "m2c cache" in c.describe()
    assert c.closed
    c.close()  # a second close is harmless
    with pytest.raises(ValueError, match="closed"):
        c.position(0)
    with pytest.raises(ValueError, match="not both"):
        m2c.Cache(small_config(), preset="mamba2-130m")


def test_update_set_read_roundtrip(cache, rng):
    win = f32(rng, 2, CD, K)
    cache.set_conv(1, win, slots=[3, 1])
    got = cache.read_conv(1, slots=[1, 3])
    assert np.array_equal(got, win[::-1])
    x = f32(rng, 1, CD)
    cache.update_conv(1, x, slots=[3])
    assert np.array_equal(cache.read_conv(1, slots=[3])[0], np.concatenate([win[0][:, 1:], x.T], axis=1))
    st = f32(rng, 4, H, P, N)
    cache.set_ssm(0, st)  # slots=None: rows 0..3
    assert np.array_equal(cache.read_ssm(0), st)
    cache.update_ssm(0, st[:1] * 2, slots=[2])
    assert np.array_equal(cache.read_ssm(0, slots=[2])[0], st[0] * 2)
    # Padding rows read as zeros; f16 in and out; caller-provided out.
    pad = cache.read_ssm(0, slots=[-1, 0])
    assert not pad[0].any() and np.array_equal(pad[1], st[0])
    half = cache.read_ssm(0, dtype="f16")
    assert half.dtype == np.float16 and np.array_equal(half, cache.read_ssm(0).astype(np.float16))
    out = np.empty((1, H, P, N), np.float32)
    assert cache.read_ssm(0, slots=[1], out=out) is out and np.array_equal(out[0], st[1])
    cache.set_ssm(0, st.astype(np.float16), slots=[0, 1, 2, 3])
    assert np.array_equal(cache.read_ssm(0), st.astype(np.float16).astype(np.float32))


def test_positions_reset_advance(cache):
    cache.advance([0, 2], 5)
    cache.advance(None, 1)
    assert [cache.position(s) for s in range(4)] == [6, 1, 6, 1]
    cache.reset([0])
    assert cache.position(0) == 0 and cache.position(2) == 6
    cache.reset()
    assert all(cache.position(s) == 0 for s in range(4))
    with pytest.raises(m2c.OutOfRange) as e:
        cache.position(4)
    assert e.value.status == 4 and "slot" in e.value.message


@pytest.mark.parametrize("width", [K, K - 1])
def test_conv_step_matches_reference(rng, width):
    cache = m2c.Cache(small_config(conv_width=width))
    p = Params(rng)
    win = f32(rng, 2, CD, width)
    cache.set_conv(0, win, slots=[2, 0])
    x = f32(rng, 2, CD)
    out = cache.conv_step(0, x, p.w, p.b, slots=[2, 0])
    assert out.shape == (2, CD) and out.dtype == np.float32
    for row in range(2):
        nwin, ref = conv_ref(win[row], x[row], p.w, p.b, width)
        np.testing.assert_allclose(out[row], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cache.read_conv(0, slots=[[2, 0][row]])[0], nwin, rtol=0, atol=0)
    # activation "none", caller's out, no bias
    o2 = np.empty((1, CD), np.float32)
    assert cache.conv_step(0, x[:1], p.w, out=o2, slots=[1], activation="none") is o2


def test_ssm_step_matches_reference(cache, rng):
    p = Params(rng)
    h0 = f32(rng, 2, H, P, N)
    cache.set_ssm(1, h0, slots=[3, 1])
    x, dt, B, C, z = f32(rng, 2, H, P), f32(rng, 2, H), f32(rng, 2, G, N), f32(rng, 2, G, N), f32(rng, 2, H, P)
    y = cache.ssm_step(1, x, dt, B, C, p.A, D=p.D, dt_bias=p.dt_bias, z=z, slots=[3, 1], dt_limit=(0.0, 0.5))
    assert y.shape == (2, I)
    got = cache.read_ssm(1, slots=[3, 1])
    for r in range(2):
        h, yr = ssm_ref(h0[r], x[r], dt[r], B[r], C[r], p.A, p.D, p.dt_bias, z[r], dt_limit=(0.0, 0.5))
        np.testing.assert_allclose(y[r].reshape(H, P), yr, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[r], h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("io", [np.float32, np.float16])
def test_prefill_is_bit_identical_to_steps(rng, io):
    a, b = m2c.Cache(small_config()), m2c.Cache(small_config())
    p = Params(rng)
    lens = [5, 3]
    T = sum(lens)
    cu = np.array([0, 5, 8], np.uint64)
    xc = f32(rng, T, CD).astype(io)
    x, dt, B, C = f32(rng, T, H, P).astype(io), f32(rng, T, H).astype(io), f32(rng, T, G, N).astype(io), f32(rng, T, G, N).astype(io)
    out = a.conv_prefill(0, cu, xc, p.w, p.b, slots=[3, 1])
    y = a.ssm_prefill(0, cu, x, dt, B, C, p.A, D=p.D, dt_bias=p.dt_bias, slots=[3, 1])
    assert out.dtype == io and y.dtype == io
    outs, ys = [], []
    for seq, slot in enumerate([3, 1]):
        for t in range(int(cu[seq]), int(cu[seq + 1])):
            outs.append(b.conv_step(0, xc[t : t + 1], p.w, p.b, slots=[slot]))
            ys.append(b.ssm_step(0, x[t : t + 1], dt[t : t + 1], B[t : t + 1], C[t : t + 1], p.A, D=p.D, dt_bias=p.dt_bias, slots=[slot]))
    assert np.array_equal(out, np.concatenate(outs)) and np.array_equal(y, np.concatenate(ys))
    assert np.array_equal(a.read_ssm(0), b.read_ssm(0)) and np.array_equal(a.read_conv(0), b.read_conv(0))


def test_errors_carry_status_message_and_change_nothing(cache, rng):
    p = Params(rng)
    cache.set_ssm(0, f32(rng, 4, H, P, N))
    before = state(cache)
    x = f32(rng, 2, CD)
    cases = [
        (m2c.OutOfRange, 4, lambda: cache.conv_step(7, x, p.w, p.b, slots=[0, 1])),
        (m2c.OutOfRange, 4, lambda: cache.conv_step(0, x, p.w, p.b, slots=[0, 9])),
        (m2c.InvalidArg, 2, lambda: cache.conv_step(0, x, p.w, p.b, slots=[1, 1])),
        (m2c.ShapeMismatch, 5, lambda: cache.conv_step(0, x, p.w[:-1], p.b, slots=[0, 1])),
        (m2c.ShapeMismatch, 5, lambda: cache.set_ssm(0, f32(rng, 10), slots=[0])),
        (
            m2c.ShapeMismatch,
            5,
            lambda: cache.ssm_step(0, f32(rng, 1, H, P), f32(rng, 1, H), f32(rng, 1, G, N), f32(rng, 1, G, N), p.A[:2], slots=[0]),
        ),
        (m2c.OutOfRange, 4, lambda: cache.reset([0, 4])),
        (m2c.InvalidArg, 2, lambda: cache.copy_slots([0, 0], [1, 1])),
    ]
    for cls, status, call in cases:
        with pytest.raises(cls) as e:
            call()
        assert isinstance(e.value, m2c.Error) and e.value.status == status, e.value
        assert e.value.message and e.value.message == str(e.value)
        after = state(cache)
        assert np.array_equal(after[0], before[0]) and np.array_equal(after[1], before[1])
    names = {m2c.status_str(s) for s in range(16)}
    assert len(names) == 16 and m2c.status_str(0) == "ok" and m2c.status_str(999) not in names - {m2c.status_str(999)}
    assert m2c.last_error()  # the thread's last message, kept by the library


def test_marshalling_rules(cache, rng):
    p = Params(rng)
    x = f32(rng, 2, CD)
    with pytest.raises(TypeError, match="float64"):
        cache.conv_step(0, x.astype(np.float64), p.w, p.b)
    with pytest.raises(TypeError, match="float32"):
        cache.conv_step(0, x, p.w.astype(np.float16), p.b)
    with pytest.raises(TypeError, match="io dtype"):
        cache.conv_step(0, x, p.w, p.b, out=np.empty((2, CD), np.float16))
    ro = np.empty((2, CD), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        cache.conv_step(0, x, p.w, p.b, out=ro)
    with pytest.raises(ValueError, match="writable C-contiguous"):
        cache.conv_step(0, x, p.w, p.b, out=np.empty((CD, 2), np.float32).T)
    with pytest.raises(OverflowError):
        cache.reset([2**40])
    with pytest.raises(TypeError):
        cache.reset("ab")
    # Non-contiguous inputs and lists are copied once and give the same result.
    a, b = m2c.Cache(small_config()), m2c.Cache(small_config())
    wide = np.zeros((2, 2 * CD), np.float32)
    wide[:, ::2] = x
    r1 = a.conv_step(0, wide[:, ::2], p.w, p.b)
    r2 = b.conv_step(0, x.tolist(), p.w.tolist(), list(p.b))
    assert np.array_equal(r1, r2)
    # Integer arrays of any width name slots.
    assert np.array_equal(a.read_conv(0, slots=np.array([1], np.int64)), a.read_conv(0, slots=[1]))


def test_slots_acquire_release_copy(cache, rng):
    got = [cache.slot_acquire() for _ in range(4)]
    assert sorted(got) == [0, 1, 2, 3] and cache.slots_in_use() == 4
    with pytest.raises(m2c.NoFreeSlot) as e:
        cache.slot_acquire()
    assert e.value.status == 11
    cache.slot_release(2)
    assert cache.slots_in_use() == 3
    with pytest.raises(m2c.Error):
        cache.slot_release(2)
    st = f32(rng, 1, H, P, N)
    cache.set_ssm(1, st, slots=[0])
    cache.advance([0], 7)
    cache.copy_slots([0, 0], [1, 3])
    assert np.array_equal(cache.read_ssm(1, slots=[3])[0], st[0]) and cache.position(3) == 7
    with pytest.raises(ValueError, match="src has"):
        cache.copy_slots([0], [1, 2])


def test_nonfinite(cache, rng):
    assert cache.count_nonfinite(0) == 0 and cache.check_finite(0) == 0
    st = f32(rng, 1, H, P, N)
    st[0, 0, 0, :3] = np.nan
    cache.set_ssm(1, st, slots=[2])
    assert cache.count_nonfinite(2) == 3 and cache.check_finite(2) == 3


def test_snapshots_and_files(cache, rng, tmp_path):
    st = f32(rng, 4, H, P, N)
    cache.set_ssm(0, st)
    cache.advance([1], 3)
    snap = cache.slot_save(1)
    assert isinstance(snap, bytes) and len(snap) == cache.slot_snapshot_size()
    buf = bytearray(len(snap) + 8)
    assert cache.slot_save(1, buf) == len(snap) and bytes(buf[: len(snap)]) == snap
    cache.slot_load(2, snap)
    assert np.array_equal(cache.read_ssm(0, slots=[2])[0], st[1]) and cache.position(2) == 3
    before = state(cache)
    bad = bytearray(snap)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(m2c.Corrupt) as e:
        cache.slot_load(0, bad)
    assert e.value.status == 12
    other = m2c.Cache(small_config(num_heads=8, intermediate_size=2 * I))
    with pytest.raises(m2c.Incompatible):
        other.slot_load(0, snap)
    assert all(np.array_equal(a, b) for a, b in zip(state(cache), before))
    path = tmp_path / "cache.m2c"
    cache.save_file(path)
    fresh = m2c.Cache(small_config())
    fresh.load_file(str(path))
    assert np.array_equal(fresh.read_ssm(0), cache.read_ssm(0)) and fresh.position(1) == 3
    with pytest.raises(m2c.Io) as e:
        fresh.load_file(tmp_path / "missing")
    assert e.value.status == 14
    with pytest.raises(ValueError, match="NUL"):
        fresh.save_file("a\0b")


def test_snapshot_format_2_keeps_the_layout_and_loads_everywhere(cache, rng):
    cache.set_ssm(0, f32(rng, 4, H, P, N))
    assert cache.snapshot_format() == 1
    v1 = cache.slot_save(3)
    cache.set_snapshot_format(2)
    assert cache.snapshot_format() == 2
    v2 = cache.slot_save(3)
    assert len(v2) == len(v1) and v2[8:12] == (2).to_bytes(4, "little") and v2[12:-8] == v1[12:-8]
    assert cache.slot_digest(3) == int.from_bytes(v2[-8:], "little")
    other = m2c.Cache(small_config())
    other.slot_load(0, v2)
    other.slot_load(1, v1)
    assert other.slot_save(0) == v1 == other.slot_save(1)
    with pytest.raises(m2c.InvalidArg):
        cache.set_snapshot_format(7)
    assert cache.snapshot_format() == 2


def test_speculative_round_commits_like_steps(rng):
    spec, plain = m2c.Cache(small_config()), m2c.Cache(small_config())
    p = Params(rng)
    spec.spec_reserve(4)
    T = 4
    xc, dt = f32(rng, T, CD), f32(rng, T, H)
    before = state(spec)
    spec.spec_begin([0, T], slots=[2])
    vout, vy = [], []
    for layer in range(2):
        o = spec.conv_verify(layer, xc, p.w, p.b)
        vout.append(o)
        vy.append(
            spec.ssm_verify(
                layer,
                o[:, :I].reshape(T, H, P).copy(),
                dt,
                o[:, I : I + G * N].reshape(T, G, N).copy(),
                o[:, I + G * N :].reshape(T, G, N).copy(),
                p.A,
                D=p.D,
                dt_bias=p.dt_bias,
            )
        )
    assert all(np.array_equal(a, b) for a, b in zip(state(spec), before))  # verify changes nothing
    spec.spec_commit([3], slots=[2])
    for t in range(T):
        for layer in range(2):
            o = plain.conv_step(layer, xc[t : t + 1], p.w, p.b, slots=[2])
            assert np.array_equal(o, vout[layer][t : t + 1])
            y = plain.ssm_step(
                layer,
                o[:, :I].reshape(1, H, P).copy(),
                dt[t : t + 1],
                o[:, I : I + G * N].reshape(1, G, N).copy(),
                o[:, I + G * N :].reshape(1, G, N).copy(),
                p.A,
                D=p.D,
                dt_bias=p.dt_bias,
                slots=[2],
            )
            assert np.array_equal(y, vy[layer][t : t + 1])
        if t == 2:
            plain.advance([2], 3)
            for layer in range(2):
                assert all(np.array_equal(a, b) for a, b in zip(state(spec, layer), state(plain, layer)))
            assert spec.position(2) == plain.position(2) == 3
    with pytest.raises(m2c.InvalidArg):
        spec.spec_commit([1], slots=[2])  # already committed
    with pytest.raises(m2c.InvalidArg):
        spec.spec_begin([0, 2, 4], slots=[1, 1])
    with pytest.raises(m2c.InvalidArg):
        spec.spec_begin([0, 2], slots=[0], parents=[0, -1])  # a parent that is not earlier
    with pytest.raises(ValueError, match="accepted has"):
        spec.spec_commit([1, 2], slots=[0])


def test_store_and_capture(rng, tmp_path):
    cache = m2c.Cache(small_config())
    p = Params(rng)
    assert m2c.key_chain([1, 2, 3, 4]) == 0x31C366485599F4B632D9870B7FE2528A
    k1 = m2c.key_chain([1, 2])
    k2 = m2c.key_chain([3, 4], prev=k1)
    assert k2 != m2c.key_chain([3, 4]) and k2 < 2**128
    with m2c.Store(budget_bytes=1 << 20, tier="full", spill_dir=tmp_path) as store:
        cache.set_ssm(0, f32(rng, 4, H, P, N))
        cache.advance([0], 2)
        assert store.insert(cache, 0, k1) == m2c.MISS_NONE
        assert store.lookup(cache, [k1, k2]) == (1, m2c.MISS_NEVER_STORED)
        store.restore(k1, cache, 3)
        assert np.array_equal(cache.read_ssm(0, slots=[3]), cache.read_ssm(0, slots=[0])) and cache.position(3) == 2
        with pytest.raises(m2c.NotFound) as e:
            store.restore(k2, cache, 3)
        assert e.value.status == 15 and "never" in e.value.message
        store.pin(k1)
        store.unpin(k1)
        store.evict(k1)
        assert store.lookup(cache, [k1])[1] == m2c.MISS_EVICTED and m2c.miss_str(m2c.MISS_EVICTED) == "evicted"
        with pytest.raises(m2c.Error):
            store.unpin(k1)
        s = store.stats()
        assert s["inserts"] == 1 and s["restores"] == 1 and s["evictions"] == 1 and s["entries"] == 0
        # A capture during a prefill stores the state after 3 tokens.
        cache.reset([1])
        cache.capture_begin(store, [(1, 3, k2)])
        xc = f32(rng, 5, CD)
        for layer in range(2):
            cache.conv_prefill(layer, [0, 5], xc, p.w, p.b, slots=[1])
            cache.ssm_prefill(layer, [0, 5], f32(rng, 5, H, P), f32(rng, 5, H), f32(rng, 5, G, N), f32(rng, 5, G, N), p.A, slots=[1])
        assert cache.capture_end(store) == [m2c.MISS_NONE]
        assert store.lookup(cache, [k2]) == (1, m2c.MISS_NONE)
    assert store.closed
    with pytest.raises(ValueError, match="closed"):
        store.stats()
    with pytest.raises(ValueError, match="unknown tier"):
        m2c.Store(tier="int4")
    with pytest.raises(m2c.Error):
        m2c.Store(budget_bytes=0)


def test_arenas_regions_digest(cache, rng):
    import ctypes

    cache.set_ssm(1, f32(rng, 4, H, P, N))
    cache.set_conv(0, f32(rng, 4, CD, K))
    arenas = cache.arenas()
    assert len(arenas) == 2 * cache.config.num_layers and all(a[2] == "cpu" for a in arenas)
    snap = cache.slot_save(2)
    image = bytearray(snap)
    covered = 0
    for slot, arena, off, n, img in cache.slot_regions([2]):
        assert slot == 2
        base, length = arenas[arena][0], arenas[arena][1]
        assert off + n <= length
        assert ctypes.string_at(base + off, n) == snap[img : img + n]
        image[img : img + n] = b"\0" * n
        covered += n
    assert covered == cache.config.num_layers * 4 * (CD * K + H * P * N)  # every f32 state byte, once
    other = m2c.Cache(small_config())
    other.slot_load(0, snap)
    assert other.slot_digest(0) == cache.slot_digest(2)
    assert other.slot_digest(1) != cache.slot_digest(2)
    with pytest.raises(m2c.OutOfRange):
        cache.slot_regions([-1])


def test_misc_functions(cache):
    assert m2c.version() == m2c.__version__ and m2c.abi_version() == m2c.ABI_VERSION == 1
    cache.set_num_threads(1)
    with pytest.raises(m2c.Error):
        cache.set_stream(1234)  # a host cache has no stream
    assert os.fspath  # keep the import used


def test_tensor_parallel_shards_and_resharding(rng):
    full = small_config()
    cfg, shard = m2c.shard_config(full, 2, 1)
    assert cfg.num_heads == H // 2 and cfg.n_groups == G // 2 and shard["heads"] == (H // 2, H)
    assert shard["x"] == (I // 2, I) and not shard["groups_replicated"] and shard["snapshot_bytes"] > 0
    cfg4, shard4 = m2c.shard_config(full, 4, 3)
    assert cfg4.n_groups == 1 and shard4["groups_replicated"]
    with pytest.raises(m2c.OutOfRange):
        m2c.shard_config(full, 2, 2)
    with pytest.raises(m2c.InvalidArg):
        m2c.shard_config(full, 3, 0)
    plan = m2c.reshard_plan(full, 1, 2)
    assert plan and all(len(run) == 5 and run[4] > 0 for run in plan)
    cache = m2c.Cache(full)
    cache.set_ssm(0, f32(rng, 4, H, P, N))
    cache.set_conv(1, f32(rng, 4, CD, K))
    cache.advance([1], 4)
    snap = cache.slot_save(1)
    two = m2c.reshard_snapshots(full, [snap], 2)
    ranks = [m2c.Cache(m2c.shard_config(full, 2, r)[0]) for r in range(2)]
    for r, part in enumerate(two):
        ranks[r].slot_load(0, part)
        assert ranks[r].position(0) == 4
    # Rank 1 holds heads H/2.. of the full state.
    assert np.array_equal(ranks[1].read_ssm(0, slots=[0])[0], cache.read_ssm(0, slots=[1])[0][H // 2 :])
    assert m2c.reshard_snapshots(full, two, 1)[0] == snap
    four = m2c.reshard_snapshots(full, two, 4)
    assert m2c.reshard_snapshots(full, four, 1)[0] == snap
    bad = bytearray(two[1])
    bad[100] ^= 1
    with pytest.raises(m2c.Corrupt, match="rank 1"):
        m2c.reshard_snapshots(full, [two[0], bytes(bad)], 1)
