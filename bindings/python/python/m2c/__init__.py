"""m2c: the recurrent state of Mamba2 models during inference, from Python.

The package wraps m2c's C API one call per method (the extension links the
C library itself; no separate ``libm2c.so`` is needed)::

    import numpy as np, m2c

    cache = m2c.Cache(preset="mamba2-130m", num_slots=8, conv_dtype="f32")
    slot = cache.slot_acquire()
    out = cache.conv_step(layer, x, weight, bias, slots=[slot])          # [1, conv_dim]
    y = cache.ssm_step(layer, xs, dt, B, C, A, D=D, dt_bias=dt_bias, slots=[slot])
    cache.advance([slot], 1)

Conventions (every method):

* ``slots`` names the rows of a call (a sequence of ints or an integer
  array; a negative entry is a padding row). ``None`` means rows ``0..n-1``,
  with ``n`` taken from the data, or every slot for ``reset``, ``advance``
  and the reads.
* Arrays come from anything with the buffer protocol (numpy, bytes,
  memoryview) or ``__dlpack__`` (torch, JAX, CuPy) and are used in place,
  without a copy, when C-contiguous (others are copied once through
  ``numpy.ascontiguousarray``). The per-token arrays are float32, bfloat16
  or float16 (one dtype per call, that of ``x``); weights and SSM parameters
  are float32. Outputs go into ``out=`` / ``y=`` (in place) or new numpy
  arrays.
* A failed call raises ``m2c.Error`` (the subclass named after its status,
  e.g. ``m2c.OutOfRange``) with ``status`` (the C status code) and
  ``message`` (the library's message), and changes nothing.
* The GIL is released during every call into m2c; one cache may be used
  from several threads at once (mutations are serialised inside m2c).
* ``conv_view`` / ``ssm_view`` return zero-copy DLPack views (see ``View``).

``m2c.hf`` puts m2c under a Hugging Face transformers Mamba2 model.
"""

from ._m2c import *  # noqa: F401,F403  (STATUS_* and MISS_* constants)
from ._m2c import (  # noqa: F401
    ABI_VERSION,
    PRESETS,
    Cache,
    Config,
    Corrupt,
    Error,
    Incompatible,
    InvalidArg,
    InvalidConfig,
    Io,
    NoFreeSlot,
    NotFound,
    NullArg,
    OutOfMemory,
    OutOfRange,
    Panic,
    Poisoned,
    ShapeMismatch,
    Store,
    Unsupported,
    UnsupportedDtype,
    View,
    abi_version,
    key_chain,
    last_error,
    miss_str,
    reshard_plan,
    reshard_snapshots,
    shard_config,
    status_str,
    version,
)

__version__ = version()

if abi_version() != ABI_VERSION:  # pragma: no cover - a broken build
    raise ImportError(f"m2c: extension built for ABI {ABI_VERSION}, library reports {abi_version()}")
