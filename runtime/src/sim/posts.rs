//! Messages waiting to be posted, for the transports that charge per
//! message or synchronise their group (`schedule::Transport`).
//!
//! Under `direct` a `Dispatch` or `Combine` starts its transfers the moment
//! it issues and this is empty. Under `m2n` the sender's messages are
//! posted one after another, each after the machine's per-message cost;
//! under `nccl` nothing is posted until every member of the collective has
//! issued it, and each member's completion waits until its own messages are
//! posted (a `sync` entry that counts as one more arrival).

use super::time::Time;
use crate::machine::{DieId, MessageCosts};
use crate::schedule::Transport;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One message: (from, to, bytes, the network tag of its collective).
pub type Message = (DieId, DieId, u64, u64);

/// One message, or one member's release from an NCCL-style group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Post {
    /// A transfer to start on the network.
    Send {
        from: DieId,
        to: DieId,
        bytes: u64,
        tag: u64,
    },
    /// Die `die`'s part of collective (`kind`, `slot`) is posted: one
    /// arrival for its completion to count.
    Sync { kind: u64, slot: usize, die: usize },
}

/// Messages and releases by when they happen; ties in the order they were
/// queued, so a step's events never depend on a heap's tie-breaking.
pub struct Posts {
    transport: Transport,
    /// The cost of posting one message under this transport.
    per_message: Time,
    queue: BinaryHeap<Reverse<(Time, u64, Post)>>,
    queued: u64,
    /// NCCL-style groups: per (kind, slot), the members still to issue and
    /// the messages of those that have, by sender.
    groups: std::collections::HashMap<(u64, usize), Group>,
    /// The members of every collective: the dies that run one.
    members: u32,
}

struct Group {
    waiting: u32,
    messages: Vec<(usize, Vec<Message>)>,
}

impl Posts {
    /// `members`: how many dies issue each collective (every alive die).
    pub fn new(transport: Transport, costs: &MessageCosts, members: u32) -> Posts {
        let per_message = match transport {
            Transport::Direct => Time::ZERO,
            Transport::M2n => Time::from_secs(costs.m2n.0),
            Transport::Nccl => Time::from_secs(costs.nccl.0),
        };
        Posts {
            transport,
            per_message,
            queue: BinaryHeap::new(),
            queued: 0,
            groups: std::collections::HashMap::new(),
            members,
        }
    }

    /// Whether a member's completion also waits for its release (one more
    /// arrival to count).
    pub fn synchronises(&self) -> bool {
        self.transport == Transport::Nccl
    }

    /// Die `d` issued collective (`kind`, `slot`) at `now` with these
    /// messages (from, to, bytes, tag), all its own. Under `direct` they are
    /// returned to start now; otherwise they are queued.
    pub fn issue(&mut self, now: Time, (kind, slot, d): (u64, usize, usize), messages: Vec<Message>) -> Vec<Message> {
        match self.transport {
            Transport::Direct => messages,
            Transport::M2n => {
                self.post(now, messages);
                Vec::new()
            }
            Transport::Nccl => {
                let members = self.members;
                let group = self.groups.entry((kind, slot)).or_insert_with(|| Group {
                    waiting: members,
                    messages: Vec::new(),
                });
                group.waiting = group.waiting.saturating_sub(1);
                group.messages.push((d, messages));
                if group.waiting == 0 {
                    if let Some(group) = self.groups.remove(&(kind, slot)) {
                        for (die, messages) in group.messages {
                            let posted = self.post(now, messages);
                            self.push(posted, Post::Sync { kind, slot, die });
                        }
                    }
                }
                Vec::new()
            }
        }
    }

    /// Queues one sender's messages, each after the last; when the last is
    /// posted. Sender `s` starts with its `s`-th receiver (in die order)
    /// and goes round, as NCCL's all-to-all rotates its peers by rank, so
    /// the senders do not all post to one receiver first.
    fn post(&mut self, now: Time, mut messages: Vec<Message>) -> Time {
        messages.sort_by_key(|m| m.1);
        if let Some(&(from, ..)) = messages.first() {
            let n = messages.len();
            messages.rotate_left(from.0 as usize % n);
        }
        let mut at = now;
        for (from, to, bytes, tag) in messages {
            at += self.per_message;
            self.push(at, Post::Send { from, to, bytes, tag });
        }
        at
    }

    fn push(&mut self, at: Time, post: Post) {
        self.queue.push(Reverse((at, self.queued, post)));
        self.queued += 1;
    }

    /// When the next post is due.
    pub fn next(&self) -> Option<Time> {
        self.queue.peek().map(|e| e.0 .0)
    }

    /// The posts due by `now`, in order.
    pub fn due(&mut self, now: Time) -> Vec<Post> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _, post))) = self.queue.peek().copied() {
            if at > now {
                break;
            }
            self.queue.pop();
            out.push(post);
        }
        out
    }
}
