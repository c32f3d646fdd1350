//! moec's runtime: the machine model every other part of moec targets.
//!
//! It owns the description of a machine (wafer-scale meshes of dies, GPU
//! switch racks, clusters), the validated machine built from it, and routing
//! over its links; later it will also own the schedule format, the kernels
//! and the simulator that runs schedules on a machine.

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
