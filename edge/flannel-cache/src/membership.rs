//! One user's channel list with read markers, as cached per `(team, user)`.
//!
//! The slot is put in the cache *before* its content is loaded from the core, so an event
//! that arrives while the load is in flight always finds it: the event then marks the slot
//! as changed and the loader throws its (possibly older) answer away and loads again. Once
//! loaded, events edit the slot in place.

use confab_proto::rest::BootChannel;
use confab_proto::{Channel, ChannelId};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

/// The caller is a member of `channel` and has read it up to `last_read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) channel: Channel,
    pub(crate) last_read: u64,
}

impl From<BootChannel> for Membership {
    fn from(state: BootChannel) -> Self {
        Self {
            channel: Channel {
                id: state.id,
                name: state.name,
                private: state.private,
                kind: state.kind,
                members: state.members,
            },
            last_read: state.last_read,
        }
    }
}

/// A cache slot; see the module docs for the load protocol.
#[derive(Debug, Default)]
pub(crate) struct UserSlot {
    /// Held while loading, so concurrent first lookups of one user make one core call.
    pub(crate) load: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// `None` until loaded, or after an event the slot could not apply in place.
    channels: Option<BTreeMap<ChannelId, Membership>>,
    /// An event for this user arrived since the current load began.
    changed_while_loading: bool,
    /// Read markers of channels the user left: the core keeps them, so a rejoin shows
    /// the same unread count as a fresh load would.
    past_reads: HashMap<ChannelId, u64>,
}

impl UserSlot {
    /// The memberships, ordered by channel id, if loaded.
    pub(crate) fn snapshot(&self) -> Option<Vec<Membership>> {
        let state = self.state.lock();
        state
            .channels
            .as_ref()
            .map(|c| c.values().cloned().collect())
    }

    /// Call right before asking the core, with [`Self::load`] held.
    pub(crate) fn begin_load(&self) {
        self.state.lock().changed_while_loading = false;
    }

    /// Stores a load unless an event raced it; gives the loaded list back either way.
    pub(crate) fn commit(
        &self,
        loaded: Vec<Membership>,
    ) -> Result<Vec<Membership>, Vec<Membership>> {
        let mut state = self.state.lock();
        if state.changed_while_loading {
            return Err(loaded);
        }
        state.channels = Some(
            loaded
                .iter()
                .map(|m| (m.channel.id.clone(), m.clone()))
                .collect(),
        );
        let mut ordered = loaded;
        ordered.sort_by(|a, b| a.channel.id.cmp(&b.channel.id));
        Ok(ordered)
    }

    /// The user joined `channel`. Without a known `last_seq` for it the edge could not
    /// show a correct unread count, so the slot is reloaded instead.
    pub(crate) fn joined(&self, channel: &Channel, last_seq_known: bool) {
        let mut state = self.state.lock();
        let state = &mut *state;
        match &mut state.channels {
            Some(channels) if last_seq_known => {
                let last_read = channels
                    .get(&channel.id)
                    .map(|m| m.last_read)
                    .or_else(|| state.past_reads.remove(&channel.id))
                    .unwrap_or(0);
                channels.insert(
                    channel.id.clone(),
                    Membership {
                        channel: channel.clone(),
                        last_read,
                    },
                );
            }
            Some(_) => state.channels = None,
            None => state.changed_while_loading = true,
        }
    }

    /// The user left `channel`.
    pub(crate) fn left(&self, channel: &ChannelId) {
        let mut state = self.state.lock();
        let state = &mut *state;
        match &mut state.channels {
            Some(channels) => {
                if let Some(gone) = channels.remove(channel) {
                    state.past_reads.insert(channel.clone(), gone.last_read);
                }
            }
            None => state.changed_while_loading = true,
        }
    }

    /// The user moved their read marker; markers only move forward.
    pub(crate) fn marked(&self, channel: &ChannelId, seq: u64) {
        let mut state = self.state.lock();
        let state = &mut *state;
        match &mut state.channels {
            Some(channels) => match channels.get_mut(channel) {
                Some(membership) => membership.last_read = membership.last_read.max(seq),
                None => {
                    let past = state.past_reads.entry(channel.clone()).or_default();
                    *past = (*past).max(seq);
                }
            },
            None => state.changed_while_loading = true,
        }
    }
}
