//! How a step's all-to-alls (`Dispatch`, `Combine`) move their messages:
//! the ideal point-to-point model every plan had before, MegaScale-Infer's
//! M2N library, or an NCCL-style collective (`../shared/PAPERS.md`).
//!
//! A message is one sender's bytes for one receiver in one collective. Its
//! per-message cost (the machine's [`MessageCosts`]) is paid on the sender,
//! one message after another, before the message goes on the network: the
//! CPU proxy or GPU work that posts it. The NCCL-style collective also
//! synchronises its group: no member sends until every member has issued
//! it, and none completes before its own messages are posted.
//!
//! [`MessageCosts`]: crate::machine::MessageCosts

use serde::{Deserialize, Serialize};

/// How the all-to-alls move their messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Each message on the network as soon as its sender issues, at no
    /// cost of its own: the links' bandwidth and latency alone.
    #[default]
    Direct,
    /// MegaScale-Infer's M2N: point-to-point writes, each paying the
    /// machine's `m2n` cost, with no group synchronisation.
    M2n,
    /// An NCCL-style all-to-all: the group synchronises, then each message
    /// pays the machine's `nccl` cost.
    Nccl,
}

impl Transport {
    /// Every transport, in the order `moec compare` lists them.
    pub const ALL: [Transport; 3] = [Transport::Direct, Transport::M2n, Transport::Nccl];

    /// The name the language and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::M2n => "m2n",
            Transport::Nccl => "nccl",
        }
    }

    pub fn is_direct(&self) -> bool {
        *self == Transport::Direct
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
