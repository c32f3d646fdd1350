//! What the passes measure on the simulator before they decide: one MoE
//! layer's dispatch + combine time ([`layer_all_to_all`], for HD-MoE's
//! gamma fit, LinkBalance and `parallel(auto)`'s link term) and each
//! link's utilisation by phase ([`phase_links`], for the migration
//! policies' cold links and windows).

pub(crate) mod layer_all_to_all;
pub(crate) mod phase_links;
