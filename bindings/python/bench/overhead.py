"""What a Python call costs over the C call: one-slot decode steps at
Mamba2-130m shapes (one layer), through the `m2c` methods and straight from
Rust on the same arrays (`Cache._time_c_calls`), medians of several rounds.

    python bench/overhead.py [--iters 2000] [--rounds 7] [--io f32|f16]

Prints a table in microseconds per call; the difference is the binding's
overhead (argument parsing, the buffer-protocol borrows, the GIL release).
"""

import argparse
import statistics
import time

import numpy as np

import m2c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--io", default="f32", choices=["f32", "f16"])
    a = ap.parse_args()
    io = np.float32 if a.io == "f32" else np.float16
    cache = m2c.Cache(preset="mamba2-130m", num_slots=1, num_layers=1, conv_dtype="f32")
    c = cache.config
    H, P, N, G, K = c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel_size
    rng = np.random.default_rng(0)
    xc = rng.standard_normal((1, c.conv_dim)).astype(io)
    w = (rng.standard_normal((c.conv_dim, K)) * 0.3).astype(np.float32)
    b = rng.standard_normal(c.conv_dim).astype(np.float32)
    out = np.empty((1, c.conv_dim), io)
    x = rng.standard_normal((1, H, P)).astype(io)
    dt = rng.standard_normal((1, H)).astype(io)
    B = rng.standard_normal((1, G, N)).astype(io)
    C = rng.standard_normal((1, G, N)).astype(io)
    A = -np.exp(rng.standard_normal(H)).astype(np.float32)
    y = np.empty((1, H * P), io)
    slots = [0]

    def py_calls(n):
        t0 = time.perf_counter()
        for _ in range(n):
            cache.conv_step(0, xc, w, b, slots=slots, out=out)
        t1 = time.perf_counter()
        for _ in range(n):
            cache.ssm_step(0, x, dt, B, C, A, slots=slots, y=y)
        t2 = time.perf_counter()
        return (t1 - t0) / n, (t2 - t1) / n

    rows = {"conv_step": ([], []), "ssm_step": ([], [])}
    py_calls(100)
    for _ in range(a.rounds):
        pc, ps = py_calls(a.iters)
        cc, cs = cache._time_c_calls(0, xc, w, b, out, x, dt, B, C, A, y, a.iters, slots=slots)
        rows["conv_step"][0].append(pc)
        rows["conv_step"][1].append(cc)
        rows["ssm_step"][0].append(ps)
        rows["ssm_step"][1].append(cs)
    print(f"m2c {m2c.version()} Python call overhead, Mamba2-130m shapes, 1 slot, io {a.io}, medians of {a.rounds} x {a.iters}")
    print(f"{'call':<10} {'python us':>10} {'C us':>8} {'overhead us':>12}")
    for name, (p, cc) in rows.items():
        mp, mc = statistics.median(p) * 1e6, statistics.median(cc) * 1e6
        print(f"{name:<10} {mp:>10.2f} {mc:>8.2f} {mp - mc:>12.2f}")


if __name__ == "__main__":
    main()
