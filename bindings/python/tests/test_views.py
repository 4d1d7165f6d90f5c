"""Zero-copy views (DLPack out) and DLPack inputs, lifetimes, threads and
fork."""

import gc
import multiprocessing as mp
import threading
import weakref

import numpy as np
import pytest

import m2c
from conftest import CD, G, H, I, K, N, P, Params, f32, small_config


def ptr(a):
    return a.__array_interface__["data"][0]


class DlpackOnly:
    """An array reachable through __dlpack__ only (as torch and JAX are)."""

    def __init__(self, a, versioned=True):
        self.a, self.versioned, self.calls = a, versioned, []

    def __dlpack__(self, **kw):
        self.calls.append(kw)
        if not self.versioned and "max_version" in kw:
            raise TypeError("old producer")
        return self.a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_views_alias_both_ways(cache, rng):
    ssm = cache.ssm_view(1)
    conv = cache.conv_view(0)
    assert ssm.shape == [4, H, P, N] and conv.shape == [4, CD, K] and ssm.dtype == "f32" and ssm.kind == "ssm"
    assert ssm.__dlpack_device__() == (1, 0) and ssm.device == "cpu" and "layer 1" in repr(ssm)
    a = np.from_dlpack(ssm)
    assert ptr(a) == ssm.data_ptr and list(a.strides) == [4 * s for s in ssm.strides]
    st = f32(rng, 4, H, P, N)
    cache.set_ssm(1, st)
    assert np.array_equal(a, st)  # m2c's writes show through
    a[2, 1, 1, 1] = 42.0
    assert cache.read_ssm(1, slots=[2])[0, 1, 1, 1] == 42.0  # and the other way
    p = Params(rng)
    cache.conv_step(0, f32(rng, 1, CD), p.w, p.b, slots=[3])
    assert np.array_equal(np.from_dlpack(conv)[3], cache.read_conv(0, slots=[3])[0])
    # The storage never moves: reset, load and copies keep views valid.
    snap = cache.slot_save(2)
    cache.reset()
    assert not a.any()
    cache.slot_load(0, snap)
    assert a[0, 1, 1, 1] == 42.0
    cache.copy_slots([0], [3])
    assert a[3, 1, 1, 1] == 42.0


def test_ring_conv_layout_matches_oldest_first_and_its_view_locates_inputs(rng):
    plain, ring = m2c.Cache(small_config()), m2c.Cache(small_config())
    assert ring.conv_layout() == "oldest_first"
    ring.set_conv_layout("ring")
    assert ring.conv_layout() == "ring"
    p = Params(rng)
    for _ in range(6):
        x = f32(rng, 2, CD)
        a = plain.conv_step(1, x, p.w, p.b, slots=[3, 0])
        b = ring.conv_step(1, x, p.w, p.b, slots=[3, 0])
        assert np.array_equal(a, b)
    want = plain.read_conv(1)
    assert np.array_equal(ring.read_conv(1), want)
    assert plain.slot_save(3) == ring.slot_save(3)
    heads = ring.conv_heads(1)
    assert heads == [6 % K, 0, 0, 6 % K] and plain.conv_heads(1) == [0] * 4
    v = np.from_dlpack(ring.conv_view(1))  # [slot][channel][physical column]
    for s in range(4):
        cols = [(heads[s] + k) % K for k in range(K)]
        assert np.array_equal(v[s][:, cols], want[s])
    with pytest.raises(ValueError):
        ring.set_conv_layout("sideways")
    with pytest.raises(m2c.OutOfRange):
        ring.conv_heads(9)
    ring.set_conv_layout("oldest_first")
    assert np.array_equal(ring.read_conv(1), want) and ring.conv_heads(1) == [0] * 4


def test_capsules_legacy_and_versioned(cache):
    v = cache.ssm_view(0)
    cap = v.__dlpack__()
    assert "dltensor" in repr(cap) and "versioned" not in repr(cap)
    cap2 = v.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(cap2)
    del cap, cap2  # unconsumed capsules free their tensors
    with pytest.raises(BufferError):
        v.__dlpack__(copy=True)
    with pytest.raises(BufferError):
        v.__dlpack__(dl_device=(2, 0))
    assert np.from_dlpack(v, copy=False).shape == (4, H, P, N)


def test_bf16_views_report_bfloat16():
    c = m2c.Cache(small_config(conv_dtype="bf16", ssm_dtype="bf16"))
    cap = c.conv_view(0).__dlpack__()
    assert c.conv_view(0).dtype == "bf16" and cap is not None
    with pytest.raises((BufferError, TypeError, ValueError, RuntimeError)):  # numpy has no bfloat16: it refuses, cleanly
        np.from_dlpack(c.ssm_view(0))


def test_views_keep_the_state_alive_after_close(rng):
    c = m2c.Cache(small_config())
    st = f32(rng, 4, H, P, N)
    c.set_ssm(0, st)
    a = np.from_dlpack(c.ssm_view(0))
    v = c.conv_view(1)
    ref = weakref.ref(c)
    c.close()
    del c
    gc.collect()
    assert ref() is None
    assert np.array_equal(a, st)  # the handle lives while the array does
    a += 1
    assert np.from_dlpack(v).shape == (4, CD, K)
    del a, v
    gc.collect()


def test_dlpack_inputs_and_outputs(rng):
    a, b = m2c.Cache(small_config()), m2c.Cache(small_config())
    p = Params(rng)
    x = f32(rng, 2, CD)
    out = np.empty((2, CD), np.float32)
    legacy = DlpackOnly(x, versioned=False)
    r1 = a.conv_step(0, DlpackOnly(x), DlpackOnly(p.w), legacy_bias := DlpackOnly(p.b), out=DlpackOnly(out))
    assert r1 is not None and legacy_bias.calls[0].get("max_version") == (1, 0)
    r2 = b.conv_step(0, legacy, p.w, p.b)
    assert np.array_equal(out, r2) and len(legacy.calls) == 2  # retried without max_version
    # numpy marks a read-only array's versioned export read-only: refused as an output.
    ro = np.empty((2, CD), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        a.conv_step(0, x, p.w, p.b, out=DlpackOnly(ro))
    # A strided DLPack input is copied once; a strided output is refused.
    wide = np.zeros((2, 2 * CD), np.float32)
    wide[:, ::2] = x
    a2, b2 = m2c.Cache(small_config()), m2c.Cache(small_config())
    assert np.array_equal(a2.conv_step(0, DlpackOnly(wide[:, ::2]), p.w, p.b), b2.conv_step(0, x, p.w, p.b))
    with pytest.raises(ValueError, match="contiguous"):
        a.conv_step(0, x, p.w, p.b, out=DlpackOnly(np.empty((CD, 2), np.float32).T))


def run_slot(cache, slot, steps, seed):
    rng = np.random.default_rng(seed)
    p = Params(np.random.default_rng(7))
    for _ in range(steps):
        o = cache.conv_step(0, f32(rng, 1, CD), p.w, p.b, slots=[slot])
        cache.ssm_step(
            0,
            o[:, :I].reshape(1, H, P).copy(),
            f32(rng, 1, H),
            o[:, I : I + G * N].reshape(1, G, N).copy(),
            o[:, I + G * N :].reshape(1, G, N).copy(),
            p.A,
            D=p.D,
            dt_bias=p.dt_bias,
            slots=[slot],
        )
        cache.advance([slot], 1)


def test_threads_share_one_cache():
    shared, serial = m2c.Cache(small_config()), m2c.Cache(small_config())
    errors = []

    def worker(slot):
        try:
            run_slot(shared, slot, 60, seed=slot)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for s in range(4):
        run_slot(serial, s, 60, seed=s)
    assert np.array_equal(shared.read_ssm(0), serial.read_ssm(0)) and np.array_equal(shared.read_conv(0), serial.read_conv(0))
    assert [shared.position(s) for s in range(4)] == [60] * 4


def child(cache, q):
    run_slot(cache, 1, 10, seed=5)
    q.put((cache.read_ssm(0).tobytes(), cache.position(1)))


def test_fork_child_uses_the_cache():
    c = m2c.Cache(small_config(num_slots=2))
    run_slot(c, 0, 5, seed=3)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=child, args=(c, q))
    proc.start()
    got, pos = q.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0 and pos == 10
    run_slot(c, 1, 10, seed=5)  # the parent, independently, the same work
    assert got == c.read_ssm(0).tobytes()
