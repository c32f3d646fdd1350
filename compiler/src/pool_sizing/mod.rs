//! Sizing disaggregated pools (`moec pools`): how many dies attention gets
//! and how many the experts, by MegaScale-Infer's plan search on the
//! simulator (`megascale.rs`) or DisagMoE's roofline split (`disagmoe.rs`);
//! on a wafer, which region shapes the pools take (`wafer.rs`).

pub mod disagmoe;
pub mod megascale;
pub mod wafer;
