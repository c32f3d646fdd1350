//! Which links leave and enter each node, kept compact (two flat tables
//! rather than a vector per node) because meshes reach a million dies.

use super::link::{Link, LinkId};
use super::node::NodeId;

/// Outgoing and incoming links of every node, each list in link-id order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Adjacency {
    outgoing: Table,
    incoming: Table,
}

/// One direction: node `n`'s links are `links[start[n]..start[n + 1]]`.
#[derive(Clone, Debug, PartialEq)]
struct Table {
    start: Vec<usize>,
    links: Vec<LinkId>,
}

impl Table {
    /// Buckets `links` by the node `end` picks; a counting sort, so each
    /// bucket keeps link-id order.
    fn new(node_count: usize, links: &[Link], end: impl Fn(&Link) -> NodeId) -> Table {
        let mut start = vec![0; node_count + 1];
        for link in links {
            start[end(link).index() + 1] += 1;
        }
        for n in 0..node_count {
            start[n + 1] += start[n];
        }
        let mut next = start.clone();
        let mut sorted = vec![LinkId(0); links.len()];
        for link in links {
            let slot = &mut next[end(link).index()];
            sorted[*slot] = link.id;
            *slot += 1;
        }
        Table { start, links: sorted }
    }

    fn of(&self, node: NodeId) -> &[LinkId] {
        let n = node.index();
        match (self.start.get(n), self.start.get(n + 1)) {
            (Some(&a), Some(&b)) => &self.links[a..b],
            _ => &[],
        }
    }
}

impl Adjacency {
    /// Indexes `links`, whose ends must all be below `node_count` (the
    /// topology builder guarantees it).
    pub(crate) fn new(node_count: usize, links: &[Link]) -> Adjacency {
        Adjacency {
            outgoing: Table::new(node_count, links, |l| l.from),
            incoming: Table::new(node_count, links, |l| l.to),
        }
    }

    /// The link from `from` to `to`, if they are wired directly. Scans the
    /// shorter of the two lists: a switch has thousands of ports, a die a few.
    pub(crate) fn between(&self, links: &[Link], from: NodeId, to: NodeId) -> Option<LinkId> {
        let out = self.outgoing.of(from);
        let inc = self.incoming.of(to);
        let candidates = if out.len() <= inc.len() { out } else { inc };
        candidates
            .iter()
            .copied()
            .find(|id| links.get(id.index()).is_some_and(|l| l.from == from && l.to == to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::link::LinkKind;
    use crate::machine::spec::LinkSpec;
    use crate::units::{BytesPerSec, Seconds};

    fn link(id: u32, from: u32, to: u32) -> Link {
        Link {
            id: LinkId(id),
            from: NodeId(from),
            to: NodeId(to),
            spec: LinkSpec {
                bandwidth: BytesPerSec(1.0),
                latency: Seconds(0.0),
            },
            kind: LinkKind::Mesh,
            alive: true,
        }
    }

    #[test]
    fn finds_each_direction_and_nothing_else() {
        let links = vec![
            link(0, 0, 3),
            link(1, 3, 0),
            link(2, 1, 3),
            link(3, 3, 1),
            link(4, 2, 3),
        ];
        let adjacency = Adjacency::new(4, &links);
        assert_eq!(adjacency.between(&links, NodeId(0), NodeId(3)), Some(LinkId(0)));
        assert_eq!(adjacency.between(&links, NodeId(3), NodeId(1)), Some(LinkId(3)));
        assert_eq!(adjacency.between(&links, NodeId(2), NodeId(3)), Some(LinkId(4)));
        assert_eq!(adjacency.between(&links, NodeId(3), NodeId(2)), None);
        assert_eq!(adjacency.between(&links, NodeId(0), NodeId(1)), None);
        assert_eq!(adjacency.between(&links, NodeId(9), NodeId(1)), None);
    }
}
