//! The simulator: the network of flows sharing links, the cost of each
//! compute instruction, a step's traffic from its routing, and the event
//! engine that runs a schedule's programs on the machine model; and the
//! physical bound no step of a schedule can beat.

pub mod bound;
pub mod cost;
pub mod engine;
pub mod moves;
pub mod netbench;
pub mod network;
pub mod posts;
pub mod time;
pub mod traffic;
