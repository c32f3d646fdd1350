//! moec's runtime: the machine model every other part of moec targets, and
//! everything that runs a compiled schedule on it.
//!
//! It owns the descriptions of a machine (wafer-scale meshes of dies, GPU
//! switch racks, clusters), a model and a workload; the validated machine
//! and routing over its links; the schedule format the compiler emits; the
//! routing sources, the simulator (roofline dies, max-min shared links, the
//! event engine), the real kernels and the numeric executor with its dense
//! reference; the reports; and the faults a run may inject (`fault`).
//! `run::run` ties them together.

pub mod fault;
pub mod input;
pub mod kernels;
pub mod machine;
pub mod model;
pub mod numerics;
pub mod report;
pub mod rng;
pub mod routing;
pub mod run;
pub mod schedule;
pub mod sim;
pub mod units;
pub mod workload;
