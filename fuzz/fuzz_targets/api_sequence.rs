//! Fuzz target `api_sequence`: the input decodes (`arbitrary`) into a small
//! cache shape and a sequence of C API calls with arbitrary arguments
//! (wrong lengths, bad, negative, repeated and out-of-range slots, bad
//! dtypes and layers, NULL and misaligned buffers, buffers that alias the
//! cache, damaged snapshots, bad kernel argument structs, bad cu_seqlens):
//! `common/gen.rs`. Each call runs against a reference model of the whole
//! state, which checks its status and its effect: `common/model.rs`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use common::{gen::Program, model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|prog: Program| model::run(prog));
