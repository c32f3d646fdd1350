//! Tensor-parallel attention groups and the token domains that go with
//! them: the compact (contiguous-TP) layout, and MoEntwine's entwined
//! layout (ER-Mapping, HER-Mapping over several wafers).
//!
//! A token domain (MoEntwine's Full Token Domain) takes one die from every
//! group, so after a group's all-gather each domain holds every token and
//! MoE dispatch and combine can stay inside it. How compact the domains
//! are is what the two layouts trade:
//!
//! - **Compact** ([`compact_groups`], [`positional_domains`]): each group a
//!   block walked as a ring of one-link hops; domain `j` is the `j`-th
//!   member of every group, so domains are spread over the whole wafer
//!   and their all-to-alls cross in its middle.
//! - **Entwined** ([`entwined`]): each domain an `a x b` block, and group
//!   `(ox, oy)` the dies at offset `(ox, oy)` in every block, so the ring
//!   of a group steps `a` or `b` links from block to block while every
//!   all-to-all stays inside its block. On several wafers the blocks tile
//!   each wafer, so a group's ring visits every wafer and the all-to-all
//!   never leaves one (HER-Mapping).
//!
//! On a mesh, each wafer is tiled by blocks of `k` dies as square as `k`
//! allows (2x2 for 4, 4x2 for 8), and each block is walked as a ring in
//! which every hop is one link, so the all-gather and reduce-scatter never
//! leave the block. Blocks that cannot tile the wafer fall back to a snake
//! walk over the whole grid cut into runs of `k`. Dead dies are skipped and
//! the walk cut into groups of `k` as it comes, so a defect shifts the
//! groups after it rather than leaving holes. Switches and clusters group
//! consecutive dies (on a cluster, dies of one node first). Dies left over
//! when the alive count is not a multiple of `k` run no attention; they
//! still serve experts.

use moec_runtime::machine::{Coord, DieId, Machine};

/// The compact groups of `k` that lie wholly inside `pool` (a
/// disaggregated plan's attention or expert pool), or every compact group
/// when there is no pool: a pool's tensor-parallel groups never reach into
/// the other pool.
pub fn compact_groups_within(machine: &Machine, k: u32, pool: Option<&[DieId]>) -> Vec<Vec<DieId>> {
    let groups = compact_groups(machine, k);
    match pool {
        None => groups,
        Some(pool) => groups
            .into_iter()
            .filter(|g| g.iter().all(|d| pool.binary_search(d).is_ok()))
            .collect(),
    }
}

/// The groups, each in ring order.
pub fn compact_groups(machine: &Machine, k: u32) -> Vec<Vec<DieId>> {
    let k = k.max(1) as usize;
    let order: Vec<DieId> = match machine.grid() {
        Some(grid) => match block_shape(grid.wafer_width, grid.wafer_height, k as u32) {
            Some((bw, bh)) => {
                let ring = block_ring(bw, bh);
                let mut order = Vec::with_capacity(machine.die_count() as usize);
                for by in (0..grid.height).step_by(bh as usize) {
                    for bx in (0..grid.width).step_by(bw as usize) {
                        order.extend(
                            ring.iter()
                                .filter_map(|&(x, y)| machine.die_at(Coord::new(bx + x, by + y))),
                        );
                    }
                }
                order
            }
            None => (0..grid.height)
                .flat_map(|y| {
                    let row: Vec<u32> = if y % 2 == 0 {
                        (0..grid.width).collect()
                    } else {
                        (0..grid.width).rev().collect()
                    };
                    row.into_iter().map(move |x| Coord::new(x, y))
                })
                .filter_map(|c| machine.die_at(c))
                .collect(),
        },
        None => (0..machine.die_count()).map(DieId).collect(),
    };
    let alive: Vec<DieId> = order.into_iter().filter(|&d| machine.is_alive(d)).collect();
    alive.chunks_exact(k).map(<[DieId]>::to_vec).collect()
}

/// Token domains of the compact layout: domain `j` takes the `j`-th die
/// (in ring order) of every group.
pub fn positional_domains(groups: &[Vec<DieId>]) -> Vec<Vec<DieId>> {
    let k = groups.first().map_or(0, Vec::len);
    (0..k).map(|j| groups.iter().map(|g| g[j]).collect()).collect()
}

/// Attention groups (each in ring order) and the token domains that go with them.
pub type GroupsAndDomains = (Vec<Vec<DieId>>, Vec<Vec<DieId>>);

/// The entwined layout for groups of `k`: the groups (each in ring order)
/// and the token domains (each a block, in row-major order inside it).
/// Needs a mesh with every die alive whose wafers the `total / k`-die
/// blocks tile; otherwise says what does not fit.
pub fn entwined(machine: &Machine, k: u32) -> Result<GroupsAndDomains, String> {
    let grid = machine
        .grid()
        .ok_or("the entwined layout needs a mesh of dies (this machine is a switch or cluster)")?;
    if let Some(d) = (0..machine.die_count()).map(DieId).find(|&d| !machine.is_alive(d)) {
        return Err(format!(
            "the entwined layout needs every die alive, and {} is defective (`tp_contiguous` lays its compact groups around defects)",
            machine.die_label(d)
        ));
    }
    let total = grid.width * grid.height;
    if k == 0 || total % k != 0 {
        return Err(format!("tp({k}) does not divide the {total} dies into groups"));
    }
    let domain = total / k;
    let (a, b) = block_shape(grid.wafer_width, grid.wafer_height, domain).ok_or_else(|| {
        format!(
            "token domains of {domain} dies (the {total} dies over tp({k})) cannot tile a {}x{} wafer; \
             on several wafers tp(k) must be a multiple of the wafer count",
            grid.wafer_width, grid.wafer_height
        )
    })?;
    let (blocks_x, blocks_y) = (grid.width / a, grid.height / b);
    let at = |x: u32, y: u32| {
        machine
            .die_at(Coord::new(x, y))
            .ok_or_else(|| format!("no die at ({x},{y})"))
    };
    let mut domains = Vec::with_capacity(k as usize);
    for by in 0..blocks_y {
        for bx in 0..blocks_x {
            let mut d = Vec::with_capacity(domain as usize);
            for oy in 0..b {
                for ox in 0..a {
                    d.push(at(bx * a + ox, by * b + oy)?);
                }
            }
            domains.push(d);
        }
    }
    let ring = block_ring(blocks_x, blocks_y);
    let mut groups = Vec::with_capacity(domain as usize);
    for oy in 0..b {
        for ox in 0..a {
            let g = ring
                .iter()
                .map(|&(bx, by)| at(bx * a + ox, by * b + oy))
                .collect::<Result<Vec<_>, _>>()?;
            groups.push(g);
        }
    }
    Ok((groups, domains))
}

/// The block `bw x bh = k` closest to square that tiles a wafer, wider
/// than tall on a tie.
fn block_shape(width: u32, height: u32, k: u32) -> Option<(u32, u32)> {
    (1..=k)
        .filter(|bh| k.is_multiple_of(*bh))
        .map(|bh| (k / bh, bh))
        .filter(|&(bw, bh)| width.is_multiple_of(bw) && height.is_multiple_of(bh))
        .min_by_key(|&(bw, bh)| (bw.abs_diff(bh), std::cmp::Reverse(bw)))
}

/// A cycle through every cell of a `bw x bh` block with one-link hops, as
/// offsets. When the block has an even side: along the top row, snake back
/// and forth over columns 1.. down the rows, and return up column 0. A
/// block with two odd sides has no such cycle; it gets a snake path, whose
/// closing hop is longer.
fn block_ring(bw: u32, bh: u32) -> Vec<(u32, u32)> {
    if bh == 1 || bw == 1 {
        return (0..bw).flat_map(|x| (0..bh).map(move |y| (x, y))).collect();
    }
    if bh % 2 == 1 && bw.is_multiple_of(2) {
        // Walk the transposed block, whose row count is even.
        return block_ring(bh, bw).into_iter().map(|(x, y)| (y, x)).collect();
    }
    if bh % 2 == 1 {
        return (0..bh)
            .flat_map(|y| {
                let row: Vec<u32> = if y % 2 == 0 {
                    (0..bw).collect()
                } else {
                    (0..bw).rev().collect()
                };
                row.into_iter().map(move |x| (x, y))
            })
            .collect();
    }
    let mut ring = vec![(0, 0)];
    for y in 0..bh {
        if y % 2 == 0 {
            ring.extend((1..bw).map(|x| (x, y)));
        } else {
            ring.extend((1..bw).rev().map(|x| (x, y)));
        }
    }
    ring.extend((1..bh).rev().map(|y| (0, y)));
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_cycle(ring: &[(u32, u32)]) -> bool {
        let hop = |a: (u32, u32), b: (u32, u32)| a.0.abs_diff(b.0) + a.1.abs_diff(b.1);
        ring.windows(2).all(|w| hop(w[0], w[1]) == 1) && hop(ring[ring.len() - 1], ring[0]) == 1
    }

    fn wafers(width: u32, height: u32, wafers_x: u32, wafers_y: u32) -> Machine {
        use moec_runtime::machine::{Defects, DieSpec, LinkSpec, MachineSpec, RoutingPolicy, Topology};
        use moec_runtime::units::{Bytes, BytesPerSec, FlopsPerSec, Seconds};
        let link = LinkSpec {
            bandwidth: BytesPerSec(1e12),
            latency: Seconds(5e-9),
        };
        Machine::build(MachineSpec {
            name: "test".into(),
            kinds: Vec::new(),
            messages: Default::default(),
            topology: Topology::Mesh {
                width,
                height,
                wafers_x,
                wafers_y,
            },
            die: DieSpec {
                compute: FlopsPerSec(1e15),
                memory: Bytes(48 << 30),
                memory_bw: BytesPerSec(2e12),
                sram: Bytes(40 << 20),
                launch_overhead: Seconds(2e-6),
                price: None,
                power: None,
            },
            link,
            inter_wafer_link: Some(link),
            inter_node_link: None,
            routing: RoutingPolicy::Xy,
            router: Default::default(),
            io: None,
            defects: Defects::default(),
        })
        .expect("valid machine")
    }

    /// The property: ER-Mapping's token domains are compact (each
    /// an a x b block: its bounding box holds exactly its dies) and
    /// disjoint, cover the machine, and take one die of every group; a
    /// group's ring steps between neighbouring blocks.
    #[test]
    fn entwined_domains_are_compact_disjoint_blocks_with_one_die_of_every_group() {
        for (w, h, wx, wy, k, hop) in [(8, 8, 1, 1, 16, 2), (8, 8, 1, 1, 4, 4), (8, 8, 2, 2, 16, 4)] {
            let m = wafers(w, h, wx, wy);
            let (groups, domains) = entwined(&m, k).expect("fits");
            assert_eq!(domains.len(), k as usize);
            let mut seen = std::collections::BTreeSet::new();
            for d in &domains {
                let coords: Vec<Coord> = d.iter().map(|&x| m.coord(x).expect("mesh")).collect();
                let (x0, x1) = (
                    coords.iter().map(|c| c.x).min().unwrap(),
                    coords.iter().map(|c| c.x).max().unwrap(),
                );
                let (y0, y1) = (
                    coords.iter().map(|c| c.y).min().unwrap(),
                    coords.iter().map(|c| c.y).max().unwrap(),
                );
                assert_eq!(
                    ((x1 - x0 + 1) * (y1 - y0 + 1)) as usize,
                    d.len(),
                    "not a block: {coords:?}"
                );
                // HER: a domain never spans two wafers.
                assert_eq!(x0 / w, x1 / w);
                assert_eq!(y0 / h, y1 / h);
                assert!(d.iter().all(|x| seen.insert(*x)), "domains overlap");
                for g in &groups {
                    assert_eq!(g.iter().filter(|x| d.contains(x)).count(), 1);
                }
            }
            assert_eq!(seen.len(), m.die_count() as usize);
            for g in &groups {
                assert_eq!(g.len(), k as usize);
                for pair in g.windows(2) {
                    assert_eq!(m.hops(pair[0], pair[1]), Some(hop), "{g:?}");
                }
            }
        }
    }

    #[test]
    fn the_compact_baseline_spreads_its_domains_and_entwined_refuses_what_does_not_tile() {
        let m = wafers(8, 8, 1, 1);
        let groups = compact_groups(&m, 16);
        let domains = positional_domains(&groups);
        assert_eq!(domains.len(), 16);
        // One die of every 4x4 block: four hops apart.
        for d in &domains {
            assert_eq!(d.len(), 4);
            assert_eq!(m.hops(d[0], d[1]), Some(4));
        }
        // 64 dies over tp(3) do not divide; on 4 wafers tp(2) would need
        // domains of 128 dies, larger than a wafer.
        assert!(entwined(&m, 3).is_err());
        assert!(entwined(&wafers(8, 8, 2, 2), 2)
            .unwrap_err()
            .contains("multiple of the wafer count"));
    }

    #[test]
    fn blocks_are_as_square_as_they_can_be_and_tile_the_wafer() {
        assert_eq!(block_shape(8, 8, 4), Some((2, 2)));
        assert_eq!(block_shape(8, 8, 8), Some((4, 2)));
        assert_eq!(block_shape(8, 8, 2), Some((2, 1)));
        assert_eq!(block_shape(8, 8, 16), Some((4, 4)));
        assert_eq!(block_shape(6, 4, 4), Some((2, 2)));
        assert_eq!(block_shape(5, 5, 4), None);
    }

    #[test]
    fn rings_visit_every_cell_once_with_one_link_hops() {
        for (bw, bh) in [(2, 2), (4, 2), (2, 4), (4, 4), (3, 2), (2, 3), (6, 4)] {
            let ring = block_ring(bw, bh);
            assert_eq!(ring.len(), (bw * bh) as usize);
            let mut cells = ring.clone();
            cells.sort();
            cells.dedup();
            assert_eq!(cells.len(), ring.len(), "{bw}x{bh}: a cell twice");
            assert!(is_cycle(&ring), "{bw}x{bh}: {ring:?}");
        }
    }
}
