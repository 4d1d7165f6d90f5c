//! Runtime selection of the instruction set the kernels are compiled for.
//! Each kernel body is an `#[inline(always)]` generic function written as
//! plain 16-lane loops; thin wrappers compile it once per instruction set
//! with `#[target_feature]`, and the widest one the CPU supports runs.
//! No variant uses fused multiply-add or reassociates sums, so all of them
//! give bit-identical results.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F/BW/VL (x86-64).
    Avx512,
    /// AVX2 + F16C (x86-64).
    Avx2,
    /// Whatever the compile target guarantees.
    Generic,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Generic => "generic",
        }
    }
}

/// The instruction set the kernels use on this machine. `M2C_ISA=generic`
/// or `M2C_ISA=avx2` in the environment caps it (for testing the fallbacks).
pub fn isa() -> Isa {
    #[cfg(test)]
    if let Some(forced) = FORCE.with(|f| f.get()) {
        return forced;
    }
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("M2C_ISA").ok();
        detect(cap.as_deref())
    })
}

#[cfg(test)]
thread_local! {
    /// Test-only: the instruction set `isa()` reports on this thread.
    pub(crate) static FORCE: std::cell::Cell<Option<Isa>> = const { std::cell::Cell::new(None) };
}

/// Whether the AVX-512 kernels may also use the AVX-512 BF16 conversion
/// instruction (`vcvtneps2bf16`) and AVX-512DQ: true only when `isa()` is
/// `Avx512` and the CPU has both. `M2C_ISA=avx512-nobf16` turns it off.
pub fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        #[cfg(test)]
        if let Some(forced) = FORCE_BF16.with(|f| f.get()) {
            return forced && isa() == Isa::Avx512;
        }
        static BF16: OnceLock<bool> = OnceLock::new();
        isa() == Isa::Avx512
            && *BF16.get_or_init(|| {
                std::env::var("M2C_ISA").ok().as_deref() != Some("avx512-nobf16")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
                    && std::arch::is_x86_feature_detected!("avx512dq")
            })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
thread_local! {
    /// Test-only: overrides `avx512_bf16()`'s CPU check on this thread.
    pub(crate) static FORCE_BF16: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The instruction sets this CPU can run, widest first.
pub fn available() -> Vec<Isa> {
    let best = detect(None);
    [Isa::Avx512, Isa::Avx2, Isa::Generic]
        .into_iter()
        .filter(|i| match best {
            Isa::Avx512 => true,
            Isa::Avx2 => *i != Isa::Avx512,
            Isa::Generic => *i == Isa::Generic,
        })
        .collect()
}

fn detect(cap: Option<&str>) -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        match cap {
            Some("generic") => Isa::Generic,
            Some("avx2") if avx2 => Isa::Avx2,
            _ if avx512 => Isa::Avx512,
            _ if avx2 => Isa::Avx2,
            _ => Isa::Generic,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = cap;
        Isa::Generic
    }
}

/// Defines `$name`, which runs `$body` (an expression using the
/// parameters) compiled for the best instruction set available.
///
/// Hand-written rather than the `multiversion` crate: the `M2C_ISA`
/// environment cap and the tests' per-thread forcing of an instruction set
/// (`FORCE`) need a dispatch m2c controls.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident<$($g:ident: $b:path),*>($($p:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub(crate) fn $name<$($g: $b),*>($($p: $t),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            unsafe fn avx512<$($g: $b),*>($($p: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn avx2<$($g: $b),*>($($p: $t),*) $body
            fn generic<$($g: $b),*>($($p: $t),*) $body
            match $crate::kernels::isa::isa() {
                // SAFETY: `isa()` returned this variant only after
                // detecting every feature it enables.
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::isa::Isa::Avx512 => unsafe { avx512::<$($g),*>($($p),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::isa::Isa::Avx2 => unsafe { avx2::<$($g),*>($($p),*) },
                _ => generic::<$($g),*>($($p),*),
            }
        }
    };
}
pub(crate) use multiversion;
