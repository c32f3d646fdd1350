//! Routes: which links a transfer from one die to another crosses.
//!
//! On meshes a route follows the dimension order the spec asks for; if a
//! defect blocks it, the other order; if that is blocked too, the shortest
//! path over alive links, found breadth-first looking east, west, south,
//! north in that order (`NEIGHBOUR_ORDER`) so the detour is always the same.
//! Switch and cluster routes go up to a switch and down again.

use super::die::DieId;
use super::error::RouteError;
use super::link::LinkId;
use super::node::NodeId;
use super::spec::{Coord, RoutingPolicy, Topology};
use super::topology::{Grid, NEIGHBOUR_ORDER};
use super::Machine;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The links a transfer crosses, in order; empty when source and
/// destination are the same die.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Links from source to destination.
    pub links: Vec<LinkId>,
}

impl Route {
    /// Links crossed.
    pub fn hops(&self) -> u32 {
        // A route visits each die at most once, so it has fewer than MAX_DIES links.
        self.links.len() as u32
    }
}

/// The two mesh axes, for dimension-order legs.
#[derive(Clone, Copy)]
enum Axis {
    X,
    Y,
}

impl Machine {
    /// The route from `src` to `dst`.
    pub fn route(&self, src: DieId, dst: DieId) -> Result<Route, RouteError> {
        for die in [src, dst] {
            if die.0 >= self.die_count() {
                return Err(RouteError::NoSuchDie(die));
            }
            if !self.is_alive(die) {
                return Err(RouteError::DeadDie(die));
            }
        }
        if src == dst {
            return Ok(Route::default());
        }
        let links = match (self.grid(), self.spec().topology) {
            (Some(grid), _) => self.mesh_route(grid, src, dst),
            (None, Topology::Cluster { nodes, per_node }) => {
                let count = self.die_count();
                let hub = if src.0 / per_node == dst.0 / per_node {
                    NodeId(count + src.0 / per_node)
                } else {
                    NodeId(count + nodes)
                };
                self.via(hub, src, dst)
            }
            (None, _) => self.via(NodeId(self.die_count()), src, dst),
        };
        links
            .map(|links| Route { links })
            .ok_or(RouteError::Unreachable { src, dst })
    }

    /// Links crossed from `src` to `dst`, if they are connected.
    pub fn hops(&self, src: DieId, dst: DieId) -> Option<u32> {
        self.route(src, dst).ok().map(|r| r.hops())
    }

    /// Which dies `src` reaches over alive links, indexed by die id.
    pub(crate) fn reached_from(&self, src: DieId) -> Vec<bool> {
        let (reached, _) = self.search(src, None);
        reached
    }

    /// Up from `src` to switch `hub`, then down to `dst`.
    fn via(&self, hub: NodeId, src: DieId, dst: DieId) -> Option<Vec<LinkId>> {
        Some(vec![
            self.alive_link(src.node(), hub)?,
            self.alive_link(hub, dst.node())?,
        ])
    }

    /// The alive link from `from` to `to`, if any.
    fn alive_link(&self, from: NodeId, to: NodeId) -> Option<LinkId> {
        self.link_between(from, to).filter(|&id| self.link(id).alive)
    }

    /// Dimension order as asked, then the other order, then a detour.
    fn mesh_route(&self, grid: Grid, src: DieId, dst: DieId) -> Option<Vec<LinkId>> {
        let (from, to) = (grid.coord(src)?, grid.coord(dst)?);
        let orders = match self.spec().routing {
            RoutingPolicy::Xy => [[Axis::X, Axis::Y], [Axis::Y, Axis::X]],
            RoutingPolicy::Yx => [[Axis::Y, Axis::X], [Axis::X, Axis::Y]],
        };
        orders
            .iter()
            .find_map(|order| self.dimension_order(grid, from, to, order))
            .or_else(|| self.shortest_path(src, dst))
    }

    /// Walks each axis in turn to the destination's value; `None` if any
    /// link on the way is dead.
    fn dimension_order(&self, grid: Grid, from: Coord, to: Coord, order: &[Axis; 2]) -> Option<Vec<LinkId>> {
        let mut links = Vec::with_capacity(from.manhattan(to) as usize);
        let mut at = from;
        for axis in order {
            loop {
                let next = match axis {
                    Axis::X if at.x < to.x => Coord::new(at.x + 1, at.y),
                    Axis::X if at.x > to.x => Coord::new(at.x - 1, at.y),
                    Axis::Y if at.y < to.y => Coord::new(at.x, at.y + 1),
                    Axis::Y if at.y > to.y => Coord::new(at.x, at.y - 1),
                    _ => break,
                };
                links.push(self.alive_link(grid.die_at(at)?.node(), grid.die_at(next)?.node())?);
                at = next;
            }
        }
        Some(links)
    }

    /// The breadth-first shortest path over alive links.
    fn shortest_path(&self, src: DieId, dst: DieId) -> Option<Vec<LinkId>> {
        let (reached, arrived_by) = self.search(src, Some(dst));
        if !reached.get(dst.index()).copied().unwrap_or(false) {
            return None;
        }
        // Walk back from the destination along the links each die was first reached by.
        let mut links = Vec::new();
        let mut at = dst;
        while at != src {
            let id = arrived_by.get(at.index()).copied().flatten()?;
            links.push(id);
            at = DieId(self.link(id).from.0);
        }
        links.reverse();
        Some(links)
    }

    /// Breadth-first over alive mesh links from `src`, stopping once `stop`
    /// is reached. Returns which dies were reached and, for each, the link
    /// it was first reached by.
    fn search(&self, src: DieId, stop: Option<DieId>) -> (Vec<bool>, Vec<Option<LinkId>>) {
        let n = self.die_count() as usize;
        let mut reached = vec![false; n];
        let mut arrived_by = vec![None; n];
        let Some(grid) = self.grid() else {
            return (reached, arrived_by);
        };
        let mut queue = VecDeque::from([src]);
        if let Some(r) = reached.get_mut(src.index()) {
            *r = true;
        }
        while let Some(here) = queue.pop_front() {
            if Some(here) == stop {
                break;
            }
            let Some(at) = grid.coord(here) else { continue };
            for edge in NEIGHBOUR_ORDER {
                let Some(there) = grid.step(at, edge).and_then(|c| grid.die_at(c)) else {
                    continue;
                };
                if reached[there.index()] {
                    continue;
                }
                if let Some(link) = self.alive_link(here.node(), there.node()) {
                    reached[there.index()] = true;
                    arrived_by[there.index()] = Some(link);
                    queue.push_back(there);
                }
            }
        }
        (reached, arrived_by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::tests::{at, mesh, spec, LINK};
    use crate::machine::{LinkKind, LinkSpec, Node};
    use crate::units::{BytesPerSec, Seconds};

    fn build(s: crate::machine::MachineSpec) -> Machine {
        Machine::build(s).expect("valid machine")
    }

    fn die(m: &Machine, x: u32, y: u32) -> DieId {
        m.die_at(Coord::new(x, y)).expect("on the grid")
    }

    /// The coordinates a route visits, checking each link starts where the
    /// last one ended.
    fn walk(m: &Machine, src: DieId, route: &Route) -> Vec<(u32, u32)> {
        let mut at = src.node();
        let mut path = vec![at];
        for &id in &route.links {
            let link = m.link(id);
            assert_eq!(link.from, at, "route is not contiguous");
            assert!(link.alive, "route crosses a dead link");
            at = link.to;
            path.push(at);
        }
        path.iter()
            .map(|n| m.coord(DieId(n.0)).map(|c| (c.x, c.y)).expect("mesh die"))
            .collect()
    }

    #[test]
    fn xy_goes_along_x_then_y_and_yx_the_reverse() {
        let m = build(mesh(8, 8));
        let (src, dst) = (die(&m, 1, 2), die(&m, 6, 5));
        let route = m.route(src, dst).expect("route");
        assert_eq!(
            walk(&m, src, &route),
            [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2), (6, 3), (6, 4), (6, 5)]
        );
        assert_eq!(route.hops(), 8);
        // Backwards both coordinates fall.
        let back = m.route(dst, src).expect("route");
        assert_eq!(
            walk(&m, dst, &back),
            [(6, 5), (5, 5), (4, 5), (3, 5), (2, 5), (1, 5), (1, 4), (1, 3), (1, 2)]
        );

        let mut s = mesh(8, 8);
        s.routing = RoutingPolicy::Yx;
        let m = build(s);
        let route = m.route(src, dst).expect("route");
        assert_eq!(
            walk(&m, src, &route),
            [(1, 2), (1, 3), (1, 4), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5), (6, 5)]
        );
        assert_eq!(m.hops(src, dst), Some(8));
        assert_eq!(m.hops(src, src), Some(0));
        assert!(m.route(src, src).expect("route").links.is_empty());
    }

    #[test]
    fn hops_are_manhattan_distance_on_a_clean_mesh() {
        let m = build(mesh(8, 8));
        for a in m.alive_dies() {
            for b in m.alive_dies() {
                let (ca, cb) = (m.coord(a).expect("mesh"), m.coord(b).expect("mesh"));
                assert_eq!(m.hops(a, b), Some(ca.manhattan(cb)));
            }
        }
    }

    #[test]
    fn a_dead_link_on_the_xy_path_makes_the_route_take_yx() {
        let mut s = mesh(8, 8);
        s.defects.dead_links.push((at(4, 2), at(3, 2)));
        let m = build(s);
        let (src, dst) = (die(&m, 1, 2), die(&m, 6, 5));
        let route = m.route(src, dst).expect("route");
        assert_eq!(
            walk(&m, src, &route),
            [(1, 2), (1, 3), (1, 4), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5), (6, 5)]
        );
        // Routes that avoid the dead link keep XY.
        let route = m.route(die(&m, 1, 3), die(&m, 6, 5)).expect("route");
        assert_eq!(walk(&m, die(&m, 1, 3), &route)[..3], [(1, 3), (2, 3), (3, 3)]);
    }

    #[test]
    fn when_both_orders_are_blocked_the_route_detours_by_the_shortest_alive_path() {
        // Same row: XY and YX are the same path, and it is cut.
        let mut s = mesh(3, 2);
        s.defects.dead_links.push((at(1, 0), at(2, 0)));
        let m = build(s);
        let (src, dst) = (die(&m, 0, 0), die(&m, 2, 0));
        let route = m.route(src, dst).expect("route");
        // East is looked at before south, so the detour leaves eastward.
        assert_eq!(walk(&m, src, &route), [(0, 0), (1, 0), (1, 1), (2, 1), (2, 0)]);

        // Both L-shaped paths cut on an 8x8: the detour is as short as any alive path.
        let mut s = mesh(8, 8);
        s.defects.dead_links = vec![(at(3, 2), at(4, 2)), (at(1, 3), at(1, 4))];
        let m = build(s);
        let (src, dst) = (die(&m, 1, 2), die(&m, 6, 5));
        let route = m.route(src, dst).expect("route");
        let path = walk(&m, src, &route);
        assert_eq!((path[0], path[path.len() - 1]), ((1, 2), (6, 5)));
        assert_eq!(route.hops(), 8);

        // A wall with one gap forces a detour longer than the Manhattan distance.
        let mut s = mesh(8, 8);
        s.defects.dead_links = (1..8).map(|y| (at(3, y), at(4, y))).collect();
        let m = build(s);
        let (src, dst) = (die(&m, 3, 7), die(&m, 4, 7));
        let route = m.route(src, dst).expect("route");
        assert_eq!(route.hops(), 1 + 7 + 7);
        assert_eq!(walk(&m, src, &route).iter().filter(|c| c.1 == 0).count(), 2);
    }

    #[test]
    fn no_route_touches_a_dead_die() {
        for routing in [RoutingPolicy::Xy, RoutingPolicy::Yx] {
            let mut s = mesh(4, 4);
            s.routing = routing;
            s.defects.dead_dies.push(at(1, 1));
            let m = build(s);
            let dead = die(&m, 1, 1);
            for a in m.alive_dies() {
                for b in m.alive_dies() {
                    let route = m.route(a, b).expect("alive dies connect");
                    assert!(!walk(&m, a, &route).contains(&(1, 1)));
                    let (ca, cb) = (m.coord(a).expect("mesh"), m.coord(b).expect("mesh"));
                    assert!(route.hops() >= ca.manhattan(cb));
                }
                assert_eq!(m.route(a, dead), Err(RouteError::DeadDie(dead)));
                assert_eq!(m.route(dead, a), Err(RouteError::DeadDie(dead)));
            }
            assert_eq!(m.route(dead, dead), Err(RouteError::DeadDie(dead)));
            assert_eq!(m.route(DieId(0), DieId(16)), Err(RouteError::NoSuchDie(DieId(16))));
        }
    }

    #[test]
    fn switch_routes_go_up_and_down_one_port_each() {
        let mut s = spec(Topology::Switch { ports: 72 });
        s.defects.dead_dies.push(crate::machine::DieRef::Index(9));
        let m = build(s);
        let route = m.route(DieId(3), DieId(40)).expect("route");
        assert_eq!(route.hops(), 2);
        let (up, down) = (m.link(route.links[0]), m.link(route.links[1]));
        let switch = NodeId(72);
        assert_eq!(m.nodes()[switch.index()], Node::RackSwitch);
        assert_eq!(
            (up.from, up.to, down.from, down.to),
            (NodeId(3), switch, switch, NodeId(40))
        );
        assert!(up.kind == LinkKind::SwitchPort && down.kind == LinkKind::SwitchPort);
        assert_eq!(m.route(DieId(3), DieId(9)), Err(RouteError::DeadDie(DieId(9))));
        assert_eq!(m.hops(DieId(5), DieId(5)), Some(0));
    }

    #[test]
    fn cluster_routes_stay_in_the_node_or_cross_the_spine() {
        let nic = LinkSpec {
            bandwidth: BytesPerSec(50e9),
            latency: Seconds(2e-6),
        };
        let mut s = spec(Topology::Cluster { nodes: 4, per_node: 8 });
        s.inter_node_link = Some(nic);
        let m = build(s);

        let inside = m.route(DieId(9), DieId(14)).expect("route");
        let (up, down) = (m.link(inside.links[0]), m.link(inside.links[1]));
        assert_eq!(m.nodes()[up.to.index()], Node::NodeSwitch(1));
        assert_eq!((up.from, down.from, down.to), (NodeId(9), up.to, NodeId(14)));
        assert!([up, down]
            .iter()
            .all(|l| l.kind == LinkKind::IntraNode && l.spec == LINK));

        let across = m.route(DieId(9), DieId(30)).expect("route");
        assert_eq!(across.hops(), 2);
        let (up, down) = (m.link(across.links[0]), m.link(across.links[1]));
        assert_eq!(m.nodes()[up.to.index()], Node::Spine);
        assert_eq!((up.from, down.from, down.to), (NodeId(9), up.to, NodeId(30)));
        assert!([up, down]
            .iter()
            .all(|l| l.kind == LinkKind::InterNode && l.spec == nic));
    }
}
