//! Contiguous expert parallelism: Megatron-LM's default layout, the
//! baseline MoETuner compares against.
//!
//! The experts of a layer are cut into N contiguous blocks of ids, one per
//! alive die (dies in id order): expert e goes to the floor(e x N / E)-th
//! die, so block sizes differ by at most one and each die's experts have
//! neighbouring ids. With fewer experts than dies, the experts spread out
//! evenly and the dies in between hold none. The rest of the model is
//! placed data-parallel by `place.rs`.

use moec_runtime::machine::DieId;

/// The die of expert `expert` of `experts` among the alive `dies`.
pub fn expert_die(expert: u32, experts: u64, dies: &[DieId]) -> DieId {
    let n = dies.len() as u64;
    dies[((u64::from(expert) * n) / experts.max(1)).min(n - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_contiguous_and_balanced() {
        let dies: Vec<DieId> = (0..62).map(DieId).collect();
        let placed: Vec<u32> = (0..256).map(|e| expert_die(e, 256, &dies).0).collect();
        // Ids never go back to an earlier die: the blocks are contiguous.
        assert!(placed.windows(2).all(|w| w[0] <= w[1]));
        let mut counts = vec![0; 62];
        for d in &placed {
            counts[*d as usize] += 1;
        }
        assert_eq!((counts.iter().min(), counts.iter().max()), (Some(&4), Some(&5)));
        // Fewer experts than dies: spread out, one each.
        let eight: Vec<u32> = (0..8).map(|e| expert_die(e, 8, &dies).0).collect();
        assert_eq!(eight, [0, 7, 15, 23, 31, 38, 46, 54]);
    }
}
