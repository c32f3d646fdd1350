//! What the passes measure on the simulator before they decide: one MoE
//! layer's dispatch + combine time ([`layer_all_to_all`], for HD-MoE's
//! gamma fit, LinkBalance and `parallel(auto)`'s link term) and each
//! link's utilisation by phase ([`phase_links`], for the migration
//! policies' cold links and windows); a whole step ([`step_time`], what
//! the `auto` searches rank by).

pub(crate) mod layer_all_to_all;
pub(crate) mod phase_links;
pub(crate) mod step_time;
