//! moec: a compiler for Mixture-of-Experts inference.
//!
//! The pipeline, one module per stage (see docs/ARCHITECTURE.md):
//! [`source`] reads files and imports; [`syntax`] parses them (pest grammar in
//! `grammar/moe.pest`) and formats them back; [`sema`] checks them into a
//! [`sema::Program`] of models, machines, workloads and plans; [`ir`] builds
//! the graph IR of a plan; [`passes`] transform and annotate it; [`driver`]
//! strings the stages together, after [`budget`] has estimated what a plan
//! will cost; [`batch_search`] finds the largest batch meeting a latency
//! target; [`diag`] is how every stage reports problems;
//! [`placement_file`] writes and reads placements in serving engines' formats.
//! The machine model, model and workload descriptions live in the
//! `moec-runtime` crate, so the compiler's decisions and the runtime's
//! measurements agree about the hardware.

// A `Diagnostic` is a few hundred bytes and built once per error, never in a
// hot loop: returning it by value keeps every call site plain.
#![allow(clippy::result_large_err)]

pub mod batch_search;
pub mod budget;
pub mod diag;
pub mod driver;
pub mod ir;
pub mod lower;
pub mod passes;
pub mod placement_file;
pub mod pool_sizing;
pub mod sema;
pub mod source;
pub mod syntax;
