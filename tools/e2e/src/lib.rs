//! m2c under a real Mamba2 model. Nothing here is a library: the crate
//! holds `tests/candle_parity.rs` (m2c against candle-transformers' own
//! Mamba2) and `examples/m2c_generate.rs`, with the model they share in
//! `examples/common/mamba2.rs`.
