//! The `cuda` feature: Mamba2 decode kernels on NVIDIA GPUs, written in CUDA
//! C (`kernels.cu`) and compiled at run time by NVRTC, with the CUDA driver
//! and NVRTC loaded dynamically (cudarc), so the crate builds on machines
//! without a CUDA toolkit. Nothing here panics on a machine without a GPU:
//! the libraries' presence is checked before any call.
//!
//! This module runs the kernels on device buffers; the device-resident
//! cache behind the C API (`M2C_DEVICE_CUDA`) is built on it.

use crate::device::DevBuf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

/// The CUDA C source of every kernel.
pub const KERNELS_CU: &str = include_str!("kernels.cu");

fn unsupported(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("CUDA: {what}: {e}"))
}

/// Whether the CUDA driver library and NVRTC can be loaded here.
pub fn libraries_present() -> bool {
    // SAFETY: these only try to dlopen the libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles the kernels to PTX for `arch` (e.g. "compute_90"); needs only
/// NVRTC, no GPU. Returns the PTX text.
pub fn compile(arch: &'static str) -> Result<String> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Unsupported("CUDA: NVRTC (libnvrtc) not found".into()));
    }
    Ok(ptx(arch)?.to_src().to_string())
}

fn ptx(arch: &'static str) -> Result<cudarc::nvrtc::Ptx> {
    let opts = cudarc::nvrtc::CompileOptions { arch: Some(arch), ..Default::default() };
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS_CU, opts).map_err(|e| unsupported("NVRTC compile", e))
}

/// One GPU with the kernels loaded.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    /// Device name.
    pub name: String,
    /// Compute capability.
    pub cc: (i32, i32),
    /// Streaming multiprocessors.
    sms: usize,
}

/// SSM shape: heads, head_dim, state_size, groups.
#[derive(Clone, Copy, Debug)]
struct SsmShape {
    heads: usize,
    head_dim: usize,
    state_size: usize,
    groups: usize,
}

/// Sequences carried in the launch parameters (no upload, no allocation)
/// up to this many; larger batches upload their tables.
const INLINE: usize = 256;

/// The sequences of a launch (`struct Seqs` in kernels.cu, field for
/// field): device arrays of slots and offsets, or null and the inline
/// copies; `prefill` 0 for a decode step (one token per sequence).
#[repr(C)]
#[derive(Clone, Copy)]
struct Seqs {
    slots: u64,
    cu: u64,
    prefill: i32,
    pad: i32,
    slot: [i32; INLINE],
    off: [u64; INLINE + 1],
}

// The parameter block must stay under CUDA's 4 KiB with the other
// arguments (16 pointers and scalars at most).
const _: () = assert!(std::mem::size_of::<Seqs>() == 3104 && std::mem::size_of::<Seqs>() + 16 * 8 < 4096);

// SAFETY: plain old data with the C layout of the kernels' `Seqs`.
unsafe impl cudarc::driver::DeviceRepr for Seqs {}

impl Seqs {
    /// Device arrays (`cu` 0 for a decode step).
    fn arrays(slots: u64, cu: u64) -> Box<Seqs> {
        Box::new(Seqs { slots, cu, prefill: (cu != 0) as i32, pad: 0, slot: [0; INLINE], off: [0; INLINE + 1] })
    }

    /// Inline copies, when they fit.
    fn inline(slots: &[i32], cu: Option<&[u64]>) -> Option<Box<Seqs>> {
        if slots.len() > INLINE {
            return None;
        }
        let mut q = Seqs::arrays(0, 0);
        q.slot[..slots.len()].copy_from_slice(slots);
        if let Some(cu) = cu {
            q.off[..cu.len()].copy_from_slice(cu);
            q.prefill = 1;
        }
        Some(q)
    }
}

impl Gpu {
    /// Opens device `index` and compiles the kernels for it. Fails with
    /// `Unsupported` (never a panic) when the driver, NVRTC or the device
    /// is missing.
    pub fn new(index: usize) -> Result<Gpu> {
        if !libraries_present() {
            return Err(Error::Unsupported("CUDA: the driver library (libcuda) or NVRTC was not found".into()));
        }
        let ctx = CudaContext::new(index).map_err(|e| unsupported(&format!("device {index}"), e))?;
        // m2c orders its own work: one stream at a time, the previous one
        // drained on a switch and before buffers are freed. cudarc's
        // per-buffer events would add an event record and wait per array
        // to every launch once a second stream exists, and waits on events
        // recorded outside a graph capture break the capture.
        // SAFETY: see above; no buffer exists on this context object yet.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(|e| unsupported("device name", e))?;
        let cc = ctx.compute_capability().map_err(|e| unsupported("compute capability", e))?;
        let arch: &'static str = Box::leak(format!("compute_{}{}", cc.0, cc.1).into_boxed_str());
        let module = ctx.load_module(ptx(arch)?).map_err(|e| unsupported("load module", e))?;
        let stream = ctx.default_stream();
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| unsupported("multiprocessor count", e))?
            .max(1) as usize;
        Ok(Gpu { ctx, stream, module, name, cc, sms })
    }

    fn function(&self, name: &str) -> Result<CudaFunction> {
        self.module.load_function(name).map_err(|e| unsupported(name, e))
    }

    /// How many blocks share the rows of one (sequence, head): 1 when the
    /// launch has enough blocks to fill the GPU (4 per multiprocessor),
    /// else up to one warp-round of rows per block (the kernel's row
    /// mapping: 32 / L rows per warp, L = largest power of two up to 32
    /// with L * vec <= N; 4 warps).
    fn row_tiles(&self, seqs: usize, shape: SsmShape, vec: usize) -> u32 {
        let mut lanes = 32;
        while lanes > 1 && lanes * vec > shape.state_size {
            lanes /= 2;
        }
        let rows_per_round = 4 * (32 / lanes);
        let max_tiles = shape.head_dim.div_ceil(rows_per_round).max(1);
        let blocks = seqs.saturating_mul(shape.heads).max(1);
        (4 * self.sms).div_ceil(blocks).clamp(1, max_tiles.min(65535)) as u32
    }

    /// Launches the SSM kernel on device addresses: a decode step of
    /// `seqs` rows, or a prefill of `seqs` sequences, as `q` says.
    ///
    /// # Safety
    /// Every address must point to a live device array of the size the
    /// shape and the token count imply (0 for the optional ones); `q` must
    /// hold (or point to) `seqs` distinct int32 slot indices below the
    /// buffer's slot count (or negative) and, for a prefill, `seqs + 1`
    /// valid offsets.
    unsafe fn launch_ssm(
        &self,
        state_dtype: DType,
        shape: SsmShape,
        state: u64,
        q: &Seqs,
        seqs: usize,
        io: &crate::device::DeviceSsmIo,
        p: &crate::device::DeviceSsmParams,
    ) -> Result<()> {
        let vec = 16 / state_dtype.size();
        let kind = if shape.state_size.is_multiple_of(vec) { "vec" } else { "scalar" };
        let vec = if kind == "vec" { vec } else { 1 };
        let f = self.function(&format!("ssm_{}_{}_{kind}", state_dtype.name(), io.dtype.name()))?;
        let (seqs32, heads) = grid("ssm", seqs, shape.heads)?;
        // B and C of a group in f32 shared memory: 48 KiB without opting in.
        if 2 * shape.state_size * 4 > 48 * 1024 {
            return Err(Error::Unsupported(format!(
                "CUDA: state_size {} needs more than 48 KiB of shared memory per block (at most 6144)",
                shape.state_size
            )));
        }
        let (h, pp, n, g) = (shape.heads as i32, shape.head_dim as i32, shape.state_size as i32, shape.groups as i32);
        let (softplus, clamp) = (p.dt_softplus as i32, p.dt_limit.is_some() as i32);
        let (lo, hi) = p.dt_limit.unwrap_or((0.0, f32::INFINITY));
        // Shared memory: B and C of the head's group in f32.
        let tiles = self.row_tiles(seqs, shape, vec);
        let cfg = LaunchConfig {
            grid_dim: (seqs32, heads, tiles),
            block_dim: (128, 1, 1),
            shared_mem_bytes: (2 * shape.state_size * 4) as u32,
        };
        let mut b = self.stream.launch_builder(&f);
        b.arg(&state)
            .arg(q)
            .arg(&io.x.addr)
            .arg(&io.dt.addr)
            .arg(&io.b.addr)
            .arg(&io.c.addr)
            .arg(&io.z.addr)
            .arg(&io.y.addr);
        b.arg(&p.a.addr).arg(&p.d.addr).arg(&p.dt_bias.addr);
        b.arg(&h).arg(&pp).arg(&n).arg(&g).arg(&softplus).arg(&clamp).arg(&lo).arg(&hi);
        // SAFETY: the argument list matches the kernel's signature (device
        // pointers passed as 64-bit addresses); the caller vouches for the
        // addresses.
        unsafe { b.launch(cfg) }.map_err(|e| unsupported("launch ssm kernel", e))?;
        Ok(())
    }

    /// Launches the conv kernel on device addresses (a step or a prefill,
    /// as `q` says; see `launch_ssm`).
    ///
    /// # Safety
    /// As for `launch_ssm`.
    unsafe fn launch_conv(
        &self,
        conv_dtype: DType,
        dim: usize,
        kernel: usize,
        width: usize,
        win: u64,
        q: &Seqs,
        seqs: usize,
        a: &crate::device::DeviceConvArgs,
    ) -> Result<()> {
        let f = self.function(&format!("conv_{}_{}", conv_dtype.name(), a.dtype.name()))?;
        let (d, k, w, s) = (dim as i32, kernel as i32, width as i32, a.silu as i32);
        let (seqs32, blocks) = grid("conv", seqs, dim.div_ceil(128))?;
        let cfg = LaunchConfig { grid_dim: (seqs32, blocks, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(&f);
        b.arg(&win).arg(q).arg(&a.x.addr).arg(&a.out.addr).arg(&a.weight.addr).arg(&a.bias.addr);
        b.arg(&d).arg(&k).arg(&w).arg(&s);
        // SAFETY: as in `launch_ssm`.
        unsafe { b.launch(cfg) }.map_err(|e| unsupported("launch conv kernel", e))?;
        Ok(())
    }
}

/// The grid of a launch: sequences on x (up to 2^31 - 1), `y` blocks on y
/// (CUDA allows 65535).
fn grid(what: &str, seqs: usize, y: usize) -> Result<(u32, u32)> {
    match (u32::try_from(seqs), u32::try_from(y)) {
        (Ok(s), Ok(b)) if s <= i32::MAX as u32 && b <= 65535 => Ok((s, b)),
        _ => Err(Error::Unsupported(format!(
            "CUDA: the {what} kernel cannot launch {seqs} x {y} blocks (at most 2^31-1 x 65535)"
        ))),
    }
}

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Unsupported(format!("CUDA: {what}: {e}"))
}

/// The device cache's memory on this GPU: plain device allocations
/// (`cuMemAllocAsync` from the device's pool where it has one, else
/// `cuMemAlloc`; never managed memory), transfers on the GPU's stream, each
/// finished before the call returns (host buffers are the caller's,
/// pageable).
impl crate::device::DeviceMem for Gpu {
    fn alloc_zeroed(&self, bytes: usize) -> Result<DevBuf> {
        let buf = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(|e| Error::OutOfMemory(format!("CUDA: cannot allocate {bytes} bytes: {e}")))?;
        Ok(Box::new(buf))
    }

    fn upload(&self, dst: &mut DevBuf, offset: usize, src: &[u8]) -> Result<()> {
        let mut v = slice_mut(dst)?.slice_mut(offset..offset + src.len());
        self.stream.memcpy_htod(src, &mut v).map_err(driver("upload"))?;
        self.stream.synchronize().map_err(driver("upload"))
    }

    fn download(&self, src: &DevBuf, offset: usize, dst: &mut [u8]) -> Result<()> {
        let v = slice(src)?.slice(offset..offset + dst.len());
        self.stream.memcpy_dtoh(&v, dst).map_err(driver("download"))?;
        self.stream.synchronize().map_err(driver("download"))
    }

    fn zero(&self, dst: &mut DevBuf, offset: usize, bytes: usize) -> Result<()> {
        let mut v = slice_mut(dst)?.slice_mut(offset..offset + bytes);
        self.stream.memset_zeros(&mut v).map_err(driver("memset"))
    }

    fn address(&self, buf: &DevBuf) -> u64 {
        slice(buf).map_or(0, |b| b.device_ptr(&self.stream).0)
    }

    fn copy(&self, src: &DevBuf, src_off: usize, dst: &mut DevBuf, dst_off: usize, bytes: usize) -> Result<()> {
        let v = slice(src)?.slice(src_off..src_off + bytes);
        let mut w = slice_mut(dst)?.slice_mut(dst_off..dst_off + bytes);
        self.stream.memcpy_dtod(&v, &mut w).map_err(driver("device copy"))
    }

    fn copy_within(&self, buf: &mut DevBuf, src_off: usize, dst_off: usize, bytes: usize) -> Result<()> {
        let buf = slice_mut(buf)?;
        assert!(src_off.max(dst_off) + bytes <= buf.len(), "device copy out of range");
        // The raw driver call does not make the context current itself.
        self.ctx.bind_to_thread().map_err(driver("bind context"))?;
        let (base, _g) = buf.device_ptr_mut(&self.stream);
        // SAFETY: both ranges lie inside the live allocation (checked
        // above); the device cache never passes overlapping ranges.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                base + dst_off as u64,
                base + src_off as u64,
                bytes,
                self.stream.cu_stream(),
            )
        }
        .map_err(driver("device copy"))
    }

    fn synchronize(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("bind context"))?;
        self.stream.synchronize().map_err(driver("stream synchronize"))
    }

    unsafe fn copy_addr(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("bind context"))?;
        // SAFETY: the caller's promise: both ranges lie in live
        // allocations of this device and do not overlap.
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(driver("device copy"))
    }

    unsafe fn zero_addr(&self, dst: u64, bytes: usize) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver("bind context"))?;
        // SAFETY: as for `copy_addr`.
        unsafe { cudarc::driver::result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }
            .map_err(driver("memset"))
    }
}

/// A buffer this device allocated, as cudarc's type.
fn slice(buf: &DevBuf) -> Result<&CudaSlice<u8>> {
    crate::device::buf_ref::<CudaSlice<u8>>(buf)
}

/// As `slice`, writable.
fn slice_mut(buf: &mut DevBuf) -> Result<&mut CudaSlice<u8>> {
    crate::device::buf_mut::<CudaSlice<u8>>(buf)
}

impl crate::device::DeviceKernels for Gpu {
    fn check_array(&self, what: &str, addr: u64, bytes: usize) -> Result<()> {
        use cudarc::driver::sys::{CUmemorytype, CUpointer_attribute as A, CUresult, cuPointerGetAttributes};
        self.ctx.bind_to_thread().map_err(driver("bind context"))?;
        // One driver call for the four attributes (every kernel call checks
        // up to nine arrays); memory CUDA does not know reads as a range of
        // size 0.
        let (mut start, mut size, mut kind, mut ordinal) = (0u64, 0usize, 0u32, -1i32);
        let mut attrs = [
            A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
            A::CU_POINTER_ATTRIBUTE_RANGE_SIZE,
            A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
        ];
        let mut data: [*mut std::ffi::c_void; 4] = [
            (&mut start as *mut u64).cast(),
            (&mut size as *mut usize).cast(),
            (&mut kind as *mut u32).cast(),
            (&mut ordinal as *mut i32).cast(),
        ];
        // SAFETY: each data pointer addresses a local of the attribute's
        // type (CUdeviceptr, size_t, CUmemorytype as a 32-bit enum, int);
        // any address may be queried.
        let r = unsafe { cuPointerGetAttributes(attrs.len() as u32, attrs.as_mut_ptr(), data.as_mut_ptr(), addr) };
        if r != CUresult::CUDA_SUCCESS || size == 0 {
            return Err(Error::InvalidArg(format!("{what} ({addr:#x}) is not memory CUDA knows (a host pointer?)")));
        }
        let end = addr.checked_add(bytes as u64);
        if end.is_none_or(|e| e > start.saturating_add(size as u64)) {
            return Err(Error::InvalidArg(format!(
                "{what}: {bytes} bytes at {addr:#x} run past the end of its allocation ({size} bytes at {start:#x})"
            )));
        }
        // Device memory of another GPU passes the range check: refuse it.
        let here = self.ctx.ordinal() as i32;
        if kind == CUmemorytype::CU_MEMORYTYPE_DEVICE as u32 && ordinal != here {
            return Err(Error::InvalidArg(format!(
                "{what} ({addr:#x}) is memory of GPU {ordinal}; this cache lives on GPU {here}"
            )));
        }
        Ok(())
    }

    fn set_stream(&mut self, raw: u64) -> Result<()> {
        use cudarc::driver::sys::{CUcontext, CUresult, CUstream, cuStreamGetCtx};
        self.ctx.bind_to_thread().map_err(driver("bind context"))?;
        let next = if raw == 0 {
            self.ctx.default_stream()
        } else {
            let mut ctx: CUcontext = std::ptr::null_mut();
            // SAFETY: `raw` is documented to be a CUstream (or 0); the
            // driver writes one CUcontext into the local.
            let r = unsafe { cuStreamGetCtx(raw as CUstream, &mut ctx) };
            if r != CUresult::CUDA_SUCCESS {
                return Err(Error::InvalidArg(format!("stream {raw:#x} is not a CUDA stream ({r:?})")));
            }
            if ctx != self.ctx.cu_ctx() {
                return Err(Error::InvalidArg(format!(
                    "stream {raw:#x} belongs to another CUDA context, not the primary context of device {}",
                    self.ctx.ordinal()
                )));
            }
            // SAFETY: the stream belongs to this context (checked); the
            // caller keeps it alive while the cache uses it (documented on
            // `m2c_set_stream`), and m2c orders its own work on it.
            unsafe { self.ctx.wrap_borrowed_stream(raw as CUstream) }
        };
        self.stream.synchronize().map_err(driver("stream synchronize"))?;
        self.stream = next;
        Ok(())
    }

    fn ssm_step(
        &self,
        cfg: &crate::Config,
        state: &mut DevBuf,
        slots: &[i32],
        io: &crate::device::DeviceSsmIo,
        p: &crate::device::DeviceSsmParams,
    ) -> Result<()> {
        // SAFETY: `state` is a layer of a cache of `cfg`; `slots` were
        // validated against its slot count; the activations are the
        // caller's contract (documented on the C API).
        self.with_tables(state, slots, None, |sp, q| unsafe {
            self.launch_ssm(cfg.ssm_dtype, ssm_shape(cfg), sp, q, slots.len(), io, p)
        })
    }

    fn ssm_prefill(
        &self,
        cfg: &crate::Config,
        state: &mut DevBuf,
        slots: &[i32],
        cu: &[u64],
        io: &crate::device::DeviceSsmIo,
        p: &crate::device::DeviceSsmParams,
    ) -> Result<()> {
        // SAFETY: as in `ssm_step`; `cu` was validated (n + 1 offsets from
        // 0, never decreasing, ending at the token count the arrays hold).
        self.with_tables(state, slots, Some(cu), |sp, q| unsafe {
            self.launch_ssm(cfg.ssm_dtype, ssm_shape(cfg), sp, q, slots.len(), io, p)
        })
    }

    fn conv_step(
        &self,
        cfg: &crate::Config,
        win: &mut DevBuf,
        slots: &[i32],
        a: &crate::device::DeviceConvArgs,
    ) -> Result<()> {
        let (dim, k, w) = (cfg.shape()?.conv_dim, cfg.conv_kernel_size as usize, cfg.conv_width as usize);
        // SAFETY: as in `ssm_step`.
        self.with_tables(win, slots, None, |wp, q| unsafe {
            self.launch_conv(cfg.conv_dtype, dim, k, w, wp, q, slots.len(), a)
        })
    }

    fn conv_prefill(
        &self,
        cfg: &crate::Config,
        win: &mut DevBuf,
        slots: &[i32],
        cu: &[u64],
        a: &crate::device::DeviceConvArgs,
    ) -> Result<()> {
        let (dim, k, w) = (cfg.shape()?.conv_dim, cfg.conv_kernel_size as usize, cfg.conv_width as usize);
        // SAFETY: as in `ssm_prefill`.
        self.with_tables(win, slots, Some(cu), |wp, q| unsafe {
            self.launch_conv(cfg.conv_dtype, dim, k, w, wp, q, slots.len(), a)
        })
    }
}

fn ssm_shape(cfg: &crate::Config) -> SsmShape {
    SsmShape {
        heads: cfg.num_heads as usize,
        head_dim: cfg.head_dim as usize,
        state_size: cfg.state_size as usize,
        groups: cfg.n_groups as usize,
    }
}

impl Gpu {
    /// Runs `launch` with the address of the layer buffer and the call's
    /// sequences: `slots` and, for a prefill, its `cu_seqlens` inline in
    /// the launch parameters when they fit (no allocation, no transfer),
    /// else uploaded for the launch (the uploads live until it has queued).
    fn with_tables(
        &self,
        buf: &mut DevBuf,
        slots: &[i32],
        cu: Option<&[u64]>,
        launch: impl FnOnce(u64, &Seqs) -> Result<()>,
    ) -> Result<()> {
        let (bp, _g0) = slice_mut(buf)?.device_ptr_mut(&self.stream);
        if let Some(q) = Seqs::inline(slots, cu) {
            return launch(bp, &q);
        }
        let dev_slots = self.stream.clone_htod(slots).map_err(driver("slots upload"))?;
        let dev_cu = cu.map(|c| self.stream.clone_htod(c)).transpose().map_err(driver("cu_seqlens upload"))?;
        let (slp, _g1) = dev_slots.device_ptr(&self.stream);
        let cup = dev_cu.as_ref().map(|c| c.device_ptr(&self.stream));
        launch(bp, &Seqs::arrays(slp, cup.as_ref().map_or(0, |c| c.0)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_gpu_means_unsupported_not_a_panic() {
        if !super::libraries_present() {
            assert!(matches!(super::Gpu::new(0), Err(crate::Error::Unsupported(_))));
        }
    }

    #[test]
    fn kernels_compile_with_nvrtc_when_it_is_available() {
        // SAFETY: only tries to dlopen the library.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            let ptx = super::compile("compute_90").expect("kernels.cu compiles");
            // Every kernel the launches name is in the module.
            for s in crate::DType::ALL {
                for i in crate::DType::ALL {
                    for name in [
                        format!("ssm_{}_{}_vec", s.name(), i.name()),
                        format!("ssm_{}_{}_scalar", s.name(), i.name()),
                        format!("conv_{}_{}", s.name(), i.name()),
                    ] {
                        assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
                    }
                }
            }
        }
    }
}
