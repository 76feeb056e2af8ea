//! [`ChatService`]: the in-process implementation of [`CoreApi`]. It validates, checks
//! team scope and membership, and then writes through the store, the per-channel
//! sequencers, presence, and publishes what changed to the fan-out and the event log.

use crate::api::{Caller, CoreApi, PeerError, Peers};
use crate::hlc::{Hlc, format_ts};
use crate::sequencer::{
    CommitListener, Draft, SequenceError, SequencerConfig, Sequencers, store_error,
};
use async_trait::async_trait;
use confab_auth::{TokenIssuer, hash_password, verify_password};
use confab_events::{EventLog, FanOut, Subscription};
use confab_presence::{PresenceError, PresenceStore};
use confab_proto::event::{TeamEvent, TeamEventBody};
use confab_proto::limits::{
    MAX_CHANNEL_NAME_BYTES, MAX_CLIENT_MSG_ID_BYTES, MAX_GROUP_DM_MEMBERS, MAX_HISTORY_LIMIT,
    MAX_PRESENCE_IDS, MAX_PUSH_SUBSCRIPTIONS_PER_USER, MAX_PUSH_URL_BYTES, MAX_TEXT_BYTES,
};
use confab_proto::rest::{
    BootChannel, CreateChannelRequest, CreatePushSubscriptionRequest, CreateTeamRequest,
    CreateTeamResponse, HistoryResponse, LoginRequest, LoginResponse, NewUser, PostMessageRequest,
    PushSubscriptionView, UserPresence,
};
use confab_proto::rtm::PresenceSetting;
use confab_proto::{
    ApiError, Channel, ChannelId, ChannelKind, ErrorCode, Message, Team, TeamId, User, UserId,
};
use confab_store::{ChannelRecord, Conflict, PushSubscription, Store, StoreError, UserRecord};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Topic of the durable event log that carries new messages for side effects.
pub const MESSAGES_TOPIC: &str = "messages";

/// Settings of the chat service.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Whether `POST /v1/teams` is open to anyone.
    pub allow_team_creation: bool,
    /// How long issued tokens stay valid.
    pub token_lifetime: Duration,
    /// Per-team buffer of an edge's event subscription before it is cut off.
    pub subscription_buffer: usize,
    pub sequencer: SequencerConfig,
    /// This node's name in the cluster; channel leases name it.
    pub node: String,
    /// The other core nodes, to forward a post to its channel's lease holder; `None` for
    /// a single node.
    pub peers: Option<Arc<dyn Peers>>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            allow_team_creation: true,
            token_lifetime: Duration::from_secs(30 * 24 * 3600),
            subscription_buffer: 65_536,
            sequencer: SequencerConfig::default(),
            node: "local".to_string(),
            peers: None,
        }
    }
}

/// The core chat service of one node.
pub struct ChatService {
    store: Arc<dyn Store>,
    presence: Arc<dyn PresenceStore>,
    fanout: Arc<dyn FanOut>,
    issuer: TokenIssuer,
    sequencers: Arc<Sequencers>,
    config: ChatConfig,
    /// A valid hash to verify against when the user is unknown, so a login attempt takes
    /// as long whether or not the email exists.
    decoy_hash: String,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Work after a message is durable that must not delay the next batch of its channel.
enum SideEffect {
    Messages(TeamId, Vec<Message>),
}

/// Publishes committed batches in `seq` order and queues their side effects.
struct Publisher {
    fanout: Arc<dyn FanOut>,
    side_effects: mpsc::Sender<SideEffect>,
}

#[async_trait]
impl CommitListener for Publisher {
    async fn committed(&self, team: &TeamId, messages: &[Message]) {
        for message in messages {
            let event = TeamEvent {
                team: team.clone(),
                body: TeamEventBody::Message {
                    message: message.clone(),
                },
            };
            if let Err(error) = self.fanout.publish(Arc::new(event)).await {
                // Durable already; clients catch up through `resume`.
                tracing::warn!(%error, "fan-out of a stored message failed");
            }
        }
        let _ = self
            .side_effects
            .send(SideEffect::Messages(team.clone(), messages.to_vec()))
            .await;
    }
}

impl ChatService {
    /// Wires the service and starts its background tasks (presence forwarding, side
    /// effects). They end when the service is dropped or [`ChatService::shutdown`] runs.
    pub fn new(
        store: Arc<dyn Store>,
        presence: Arc<dyn PresenceStore>,
        fanout: Arc<dyn FanOut>,
        event_log: Arc<dyn EventLog>,
        issuer: TokenIssuer,
        config: ChatConfig,
    ) -> Result<Arc<Self>, ApiError> {
        let (side_effects, side_rx) = mpsc::channel(16_384);
        let publisher = Arc::new(Publisher {
            fanout: Arc::clone(&fanout),
            side_effects,
        });
        // A lease names this process, not just the node: a restarted node must not
        // renew what its previous incarnation held (and may still be writing under).
        let mut sequencer = config.sequencer.clone();
        sequencer.holder = format!("{}@{}", config.node, ulid::Ulid::new());
        let sequencers = Sequencers::new(
            Arc::clone(&store),
            Arc::new(Hlc::new()),
            publisher,
            sequencer,
        );
        let decoy_hash = hash_password("decoy password that matches nothing").map_err(internal)?;
        let service = Arc::new(Self {
            store: Arc::clone(&store),
            presence: Arc::clone(&presence),
            fanout: Arc::clone(&fanout),
            issuer,
            sequencers,
            config,
            decoy_hash,
        });
        tokio::spawn(run_side_effects(
            side_rx,
            store,
            Arc::clone(&fanout),
            event_log,
        ));
        tokio::spawn(forward_presence(presence, fanout));
        Ok(service)
    }

    /// Checks a post and has it sequenced: here if this node holds (or can take) the
    /// channel's lease; otherwise, when `may_forward`, by the node that holds it. A
    /// holder that cannot be reached keeps its lease until it runs out, so the post
    /// waits for that (and then takes the lease here) rather than failing at once.
    async fn sequence(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
        may_forward: bool,
    ) -> Result<Message, ApiError> {
        check_post(&req)?;
        self.member_channel(caller, &req.channel).await?;
        let patience = self.config.sequencer.lease_ttl * 2 + Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let draft = Draft {
                user: caller.user.clone(),
                text: req.text.clone(),
                client_msg_id: req.client_msg_id.clone(),
            };
            let held_by = match self
                .sequencers
                .submit(&caller.team, &req.channel, draft)
                .await
            {
                Ok(message) => return own_message(caller, message),
                Err(SequenceError::Failed(error)) => return Err(error),
                Err(SequenceError::HeldBy { holder, .. }) => holder,
            };
            let node = holder_node(&held_by);
            let peers = self.config.peers.as_ref().filter(|_| may_forward);
            if let Some(peers) = peers
                && node != self.config.node
            {
                match peers.sequence_at(node, caller, req.clone()).await {
                    Ok(message) => {
                        forward_metrics::forwarded();
                        return own_message(caller, message);
                    }
                    Err(PeerError::Api(error)) if error.code != ErrorCode::Unavailable => {
                        return Err(error);
                    }
                    // Unreachable, lost, or the lease moved on: ask again below.
                    Err(error) => {
                        tracing::debug!(%node, %error, channel = %req.channel, "forwarding a post failed; retrying");
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the channel's sequencer ({node}) did not take the message within {patience:?}; retry"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops taking messages, lets queued sends finish (bounded by `grace`), then makes
    /// the store durable. Returns false if something did not finish in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let drained = self.sequencers.drain(grace).await;
        let flushed = match self.store.flush().await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "store flush at shutdown failed");
                false
            }
        };
        drained && flushed
    }

    async fn publish(&self, team: &TeamId, body: TeamEventBody) {
        let event = TeamEvent {
            team: team.clone(),
            body,
        };
        if let Err(error) = self.fanout.publish(Arc::new(event)).await {
            tracing::warn!(%error, "fan-out failed");
        }
    }

    async fn user_record(&self, team: &TeamId, user: &UserId) -> Result<UserRecord, ApiError> {
        self.store
            .user(team, user)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotAuthed, "the token's user no longer exists"))
    }

    /// The channel if the caller may see it. Other teams' ids and private channels the
    /// caller is not in are indistinguishable from ids that do not exist.
    async fn visible_channel(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<(ChannelRecord, bool), ApiError> {
        let not_found =
            || ApiError::new(ErrorCode::ChannelNotFound, format!("no channel {channel}"));
        let record = self
            .store
            .channel(&caller.team, channel)
            .await
            .map_err(store_error)?
            .ok_or_else(not_found)?;
        let member = self
            .store
            .is_member(&caller.team, channel, &caller.user)
            .await
            .map_err(store_error)?;
        if !member && !record.channel.kind.is_listed() {
            return Err(not_found());
        }
        Ok((record, member))
    }

    /// The channel if the caller is a member: the rule for every read and write of its
    /// messages.
    async fn member_channel(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<ChannelRecord, ApiError> {
        let (record, member) = self.visible_channel(caller, channel).await?;
        if !member {
            return Err(ApiError::new(
                ErrorCode::NotInChannel,
                format!("not a member of {channel}"),
            ));
        }
        Ok(record)
    }

    async fn existing_users(
        &self,
        team: &TeamId,
        ids: &[UserId],
    ) -> Result<Vec<UserRecord>, ApiError> {
        let found = self.store.users(team, ids).await.map_err(store_error)?;
        if let Some(missing) = ids
            .iter()
            .find(|id| !found.iter().any(|r| &r.user.id == *id))
        {
            return Err(ApiError::new(
                ErrorCode::UserNotFound,
                format!("no user {missing} in this team"),
            ));
        }
        Ok(found)
    }

    fn issue(&self, team: &TeamId, user: &UserId) -> Result<String, ApiError> {
        self.issuer.issue(team, user).map_err(internal)
    }
}

#[async_trait]
impl CoreApi for ChatService {
    async fn create_team(&self, req: CreateTeamRequest) -> Result<CreateTeamResponse, ApiError> {
        if !self.config.allow_team_creation {
            return Err(ApiError::new(
                ErrorCode::TeamCreationDisabled,
                "team creation is turned off here",
            ));
        }
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > 120 {
            return Err(invalid("team name must be 1 to 120 bytes"));
        }
        let domain = validate_domain(&req.domain)?;
        let team = Team {
            id: TeamId::generate(),
            name,
            domain,
        };
        let owner = new_user_record(&team.id, req.owner, true).await?;
        self.store
            .create_team(&team, &owner)
            .await
            .map_err(conflict_error)?;
        let token = self.issue(&team.id, &owner.user.id)?;
        tracing::info!(team = %team.id, domain = %team.domain, "team created");
        Ok(CreateTeamResponse {
            team,
            user: owner.user,
            token,
        })
    }

    async fn login(&self, req: LoginRequest) -> Result<LoginResponse, ApiError> {
        let denied = || {
            ApiError::new(
                ErrorCode::InvalidCredentials,
                "wrong team, email or password",
            )
        };
        let team = self
            .store
            .team_by_domain(&req.team.trim().to_lowercase())
            .await
            .map_err(store_error)?;
        let record = match &team {
            Some(team) => self
                .store
                .user_by_email(&team.id, &req.email)
                .await
                .map_err(store_error)?,
            None => None,
        };
        let hash = record
            .as_ref()
            .map_or(self.decoy_hash.clone(), |r| r.password_hash.clone());
        let password = req.password;
        let matches = password_work(move || verify_password(&password, &hash)).await?;
        match (team, record) {
            (Some(team), Some(record)) if matches => Ok(LoginResponse {
                token: self.issue(&team.id, &record.user.id)?,
                user: record.user,
            }),
            _ => Err(denied()),
        }
    }

    async fn team(&self, caller: &Caller) -> Result<Team, ApiError> {
        self.store
            .team(&caller.team)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotAuthed, "the token's team no longer exists"))
    }

    async fn create_user(&self, caller: &Caller, req: NewUser) -> Result<User, ApiError> {
        if !self
            .user_record(&caller.team, &caller.user)
            .await?
            .user
            .is_admin
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only team admins can create users",
            ));
        }
        let record = new_user_record(&caller.team, req, false).await?;
        self.store
            .create_user(&record)
            .await
            .map_err(conflict_error)?;
        self.publish(
            &caller.team,
            TeamEventBody::UserChanged {
                user: record.user.clone(),
            },
        )
        .await;
        Ok(record.user)
    }

    async fn users(&self, caller: &Caller, ids: &[UserId]) -> Result<Vec<User>, ApiError> {
        if ids.len() > MAX_PRESENCE_IDS {
            return Err(invalid(format!(
                "at most {MAX_PRESENCE_IDS} ids per request"
            )));
        }
        let records = self
            .store
            .users(&caller.team, ids)
            .await
            .map_err(store_error)?;
        Ok(records.into_iter().map(|r| r.user).collect())
    }

    async fn create_channel(
        &self,
        caller: &Caller,
        req: CreateChannelRequest,
    ) -> Result<Channel, ApiError> {
        let name = validate_channel_name(&req.name)?;
        let (kind, private) = if req.private {
            (ChannelKind::Private, true)
        } else {
            (ChannelKind::Public, false)
        };
        let record = ChannelRecord {
            team: caller.team.clone(),
            channel: Channel {
                id: ChannelId::generate(),
                name,
                private,
                kind,
                members: None,
            },
            created_by: caller.user.clone(),
            dm_key: None,
        };
        self.store
            .create_channel(&record, std::slice::from_ref(&caller.user))
            .await
            .map_err(conflict_error)?;
        let channel = record.channel;
        self.publish(
            &caller.team,
            TeamEventBody::ChannelCreated {
                channel: channel.clone(),
            },
        )
        .await;
        self.publish(
            &caller.team,
            TeamEventBody::MemberJoined {
                channel: channel.clone(),
                user: caller.user.clone(),
            },
        )
        .await;
        Ok(channel)
    }

    async fn open_dm(&self, caller: &Caller, users: &[UserId]) -> Result<Channel, ApiError> {
        let mut members: BTreeSet<UserId> = users.iter().cloned().collect();
        members.insert(caller.user.clone());
        if members.len() > MAX_GROUP_DM_MEMBERS {
            return Err(invalid(format!(
                "a group DM has at most {MAX_GROUP_DM_MEMBERS} members"
            )));
        }
        let members: Vec<UserId> = members.into_iter().collect();
        self.existing_users(&caller.team, &members).await?;
        let kind = if members.len() <= 2 {
            ChannelKind::Dm
        } else {
            ChannelKind::GroupDm
        };
        let dm_key = members
            .iter()
            .map(UserId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let proposal = ChannelRecord {
            team: caller.team.clone(),
            channel: Channel {
                id: ChannelId::generate_dm(),
                name: String::new(),
                private: true,
                kind,
                members: Some(members.clone()),
            },
            created_by: caller.user.clone(),
            dm_key: Some(dm_key),
        };
        let record = self
            .store
            .get_or_create_dm(&proposal, &members)
            .await
            .map_err(store_error)?;
        if record.channel.id == proposal.channel.id {
            self.publish(
                &caller.team,
                TeamEventBody::ChannelCreated {
                    channel: record.channel.clone(),
                },
            )
            .await;
            for user in &members {
                self.publish(
                    &caller.team,
                    TeamEventBody::MemberJoined {
                        channel: record.channel.clone(),
                        user: user.clone(),
                    },
                )
                .await;
            }
        }
        Ok(record.channel)
    }

    async fn channel(&self, caller: &Caller, channel: &ChannelId) -> Result<Channel, ApiError> {
        Ok(self.visible_channel(caller, channel).await?.0.channel)
    }

    async fn list_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        let mut channels: Vec<Channel> = self
            .store
            .public_channels(&caller.team)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|r| r.channel)
            .collect();
        let private = self
            .member_channels(caller)
            .await?
            .into_iter()
            .filter(|c| c.kind == ChannelKind::Private);
        channels.extend(private);
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(channels)
    }

    async fn member_channels(&self, caller: &Caller) -> Result<Vec<Channel>, ApiError> {
        let ids = self
            .store
            .member_channels(&caller.team, &caller.user)
            .await
            .map_err(store_error)?;
        let mut channels = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self
                .store
                .channel(&caller.team, &id)
                .await
                .map_err(store_error)?
            {
                channels.push(record.channel);
            }
        }
        Ok(channels)
    }

    async fn channel_members(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Vec<UserId>, ApiError> {
        self.visible_channel(caller, channel).await?;
        self.store
            .channel_members(&caller.team, channel)
            .await
            .map_err(store_error)
    }

    async fn join_channel(
        &self,
        caller: &Caller,
        channel: &ChannelId,
    ) -> Result<Channel, ApiError> {
        let (record, member) = self.visible_channel(caller, channel).await?;
        if record.channel.kind != ChannelKind::Public {
            return Err(ApiError::new(
                ErrorCode::CantJoin,
                "only public channels can be joined; ask a member to add you",
            ));
        }
        if !member {
            self.store
                .add_members(&caller.team, channel, std::slice::from_ref(&caller.user))
                .await
                .map_err(store_error)?;
            self.publish(
                &caller.team,
                TeamEventBody::MemberJoined {
                    channel: record.channel.clone(),
                    user: caller.user.clone(),
                },
            )
            .await;
        }
        Ok(record.channel)
    }

    async fn add_members(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        users: &[UserId],
    ) -> Result<(), ApiError> {
        let record = self.member_channel(caller, channel).await?;
        if record.channel.kind.is_direct() {
            return Err(ApiError::new(
                ErrorCode::CantJoin,
                "DM members are fixed; open a new DM instead",
            ));
        }
        if users.is_empty() || users.len() > 1000 {
            return Err(invalid("user_ids must name 1 to 1000 users"));
        }
        self.existing_users(&caller.team, users).await?;
        let current: BTreeSet<UserId> = self
            .store
            .channel_members(&caller.team, channel)
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        let new: Vec<UserId> = users
            .iter()
            .filter(|u| !current.contains(*u))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.store
            .add_members(&caller.team, channel, &new)
            .await
            .map_err(store_error)?;
        for user in new {
            self.publish(
                &caller.team,
                TeamEventBody::MemberJoined {
                    channel: record.channel.clone(),
                    user,
                },
            )
            .await;
        }
        Ok(())
    }

    async fn leave_channel(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        let record = self.member_channel(caller, channel).await?;
        if record.channel.kind.is_direct() {
            return Err(ApiError::new(ErrorCode::CantJoin, "DMs cannot be left"));
        }
        self.store
            .remove_member(&caller.team, channel, &caller.user)
            .await
            .map_err(store_error)?;
        self.publish(
            &caller.team,
            TeamEventBody::MemberLeft {
                channel: channel.clone(),
                user: caller.user.clone(),
            },
        )
        .await;
        Ok(())
    }

    async fn post_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        self.sequence(caller, req, true).await
    }

    async fn sequence_message(
        &self,
        caller: &Caller,
        req: PostMessageRequest,
    ) -> Result<Message, ApiError> {
        self.sequence(caller, req, false).await
    }

    async fn history(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryResponse, ApiError> {
        self.member_channel(caller, channel).await?;
        let limit = limit.clamp(1, MAX_HISTORY_LIMIT);
        let mut messages = self
            .store
            .history(&caller.team, channel, before, limit + 1)
            .await
            .map_err(store_error)?;
        let has_more = messages.len() > limit;
        messages.truncate(limit);
        Ok(HistoryResponse { messages, has_more })
    }

    async fn messages_after(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, ApiError> {
        self.member_channel(caller, channel).await?;
        self.store
            .messages_after(
                &caller.team,
                channel,
                after,
                limit.clamp(1, MAX_HISTORY_LIMIT),
            )
            .await
            .map_err(store_error)
    }

    async fn mark_read(
        &self,
        caller: &Caller,
        channel: &ChannelId,
        seq: u64,
    ) -> Result<(), ApiError> {
        self.member_channel(caller, channel).await?;
        let last = self
            .store
            .last_seq(&caller.team, channel)
            .await
            .map_err(store_error)?;
        let seq = seq.min(last);
        self.store
            .mark_read(&caller.team, &caller.user, channel, seq)
            .await
            .map_err(store_error)?;
        self.publish(
            &caller.team,
            TeamEventBody::ReadMarker {
                channel: channel.clone(),
                user: caller.user.clone(),
                seq,
            },
        )
        .await;
        Ok(())
    }

    async fn channel_states(&self, caller: &Caller) -> Result<Vec<BootChannel>, ApiError> {
        let channels = self.member_channels(caller).await?;
        let markers: HashMap<ChannelId, u64> = self
            .store
            .read_markers(&caller.team, &caller.user)
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        let mut states = Vec::with_capacity(channels.len());
        for channel in channels {
            let last_seq = self
                .store
                .last_seq(&caller.team, &channel.id)
                .await
                .map_err(store_error)?;
            let last_read = markers.get(&channel.id).copied().unwrap_or(0).min(last_seq);
            states.push(BootChannel {
                id: channel.id,
                name: channel.name,
                kind: channel.kind,
                private: channel.private,
                last_seq,
                last_read,
                unread: last_seq - last_read,
                members: channel.members,
            });
        }
        Ok(states)
    }

    async fn typing(&self, caller: &Caller, channel: &ChannelId) -> Result<(), ApiError> {
        self.member_channel(caller, channel).await?;
        self.publish(
            &caller.team,
            TeamEventBody::Typing {
                channel: channel.clone(),
                user: caller.user.clone(),
            },
        )
        .await;
        Ok(())
    }

    async fn heartbeat(&self, caller: &Caller, session: &str) -> Result<(), ApiError> {
        self.presence
            .heartbeat(&caller.team, &caller.user, session)
            .await
            .map_err(presence_error)
    }

    async fn end_session(&self, caller: &Caller, session: &str) -> Result<(), ApiError> {
        self.presence
            .end_session(&caller.team, &caller.user, session)
            .await
            .map_err(presence_error)
    }

    async fn set_presence(
        &self,
        caller: &Caller,
        setting: PresenceSetting,
    ) -> Result<(), ApiError> {
        self.presence
            .set_manual(&caller.team, &caller.user, setting)
            .await
            .map_err(presence_error)
    }

    async fn presence(
        &self,
        caller: &Caller,
        users: &[UserId],
    ) -> Result<Vec<UserPresence>, ApiError> {
        if users.len() > MAX_PRESENCE_IDS {
            return Err(invalid(format!("at most {MAX_PRESENCE_IDS} ids per query")));
        }
        let states = self
            .presence
            .presence(&caller.team, users)
            .await
            .map_err(presence_error)?;
        Ok(users
            .iter()
            .cloned()
            .zip(states)
            .map(|(id, presence)| UserPresence { id, presence })
            .collect())
    }

    async fn create_push_subscription(
        &self,
        caller: &Caller,
        req: CreatePushSubscriptionRequest,
    ) -> Result<PushSubscriptionView, ApiError> {
        let url = check_push_url(&req.url)?;
        let existing = self
            .store
            .push_subscriptions(&caller.team, &caller.user)
            .await
            .map_err(store_error)?;
        if existing.len() >= MAX_PUSH_SUBSCRIPTIONS_PER_USER {
            return Err(invalid(format!(
                "at most {MAX_PUSH_SUBSCRIPTIONS_PER_USER} push subscriptions per user; delete one first"
            )));
        }
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let subscription = PushSubscription {
            team: caller.team.clone(),
            user: caller.user.clone(),
            id: format!("P{}", ulid::Ulid::new()),
            url,
            created_ts: format_ts(micros),
        };
        self.store
            .create_push_subscription(&subscription)
            .await
            .map_err(store_error)?;
        Ok(push_view(subscription))
    }

    async fn push_subscriptions(
        &self,
        caller: &Caller,
    ) -> Result<Vec<PushSubscriptionView>, ApiError> {
        let subscriptions = self
            .store
            .push_subscriptions(&caller.team, &caller.user)
            .await
            .map_err(store_error)?;
        Ok(subscriptions.into_iter().map(push_view).collect())
    }

    async fn delete_push_subscription(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        let deleted = self
            .store
            .delete_push_subscription(&caller.team, &caller.user, id)
            .await
            .map_err(store_error)?;
        if deleted {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::NotFound,
                "no such push subscription",
            ))
        }
    }

    async fn subscribe(&self, team: &TeamId) -> Result<Subscription, ApiError> {
        self.fanout
            .subscribe(team, self.config.subscription_buffer)
            .await
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))
    }
}

/// Appends new messages to the durable event log (for notify and other consumers) and
/// moves each sender's read marker past their own message.
async fn run_side_effects(
    mut queue: mpsc::Receiver<SideEffect>,
    store: Arc<dyn Store>,
    fanout: Arc<dyn FanOut>,
    log: Arc<dyn EventLog>,
) {
    while let Some(SideEffect::Messages(team, messages)) = queue.recv().await {
        for message in &messages {
            let event = TeamEvent {
                team: team.clone(),
                body: TeamEventBody::Message {
                    message: message.clone(),
                },
            };
            let payload = serde_json::to_vec(&event).expect("events serialize");
            if let Err(error) = log
                .append(MESSAGES_TOPIC, message.channel.as_str(), &payload)
                .await
            {
                tracing::error!(%error, seq = message.seq, "event log append failed; side effects of this message are lost");
            }
        }
        let mut last_by_author: HashMap<(&UserId, &ChannelId), u64> = HashMap::new();
        for message in &messages {
            last_by_author.insert((&message.user, &message.channel), message.seq);
        }
        for ((user, channel), seq) in last_by_author {
            if store.mark_read(&team, user, channel, seq).await.is_ok() {
                let body = TeamEventBody::ReadMarker {
                    channel: channel.clone(),
                    user: user.clone(),
                    seq,
                };
                let _ = fanout
                    .publish(Arc::new(TeamEvent {
                        team: team.clone(),
                        body,
                    }))
                    .await;
            }
        }
    }
}

/// Turns presence changes into team events for the edges.
async fn forward_presence(presence: Arc<dyn PresenceStore>, fanout: Arc<dyn FanOut>) {
    let mut changes = presence.changes();
    loop {
        match changes.recv().await {
            Ok(change) => {
                let body = TeamEventBody::Presence {
                    user: change.user,
                    presence: change.presence,
                };
                let _ = fanout
                    .publish(Arc::new(TeamEvent {
                        team: change.team,
                        body,
                    }))
                    .await;
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "presence forwarder lagged; some presence changes were not pushed"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

async fn new_user_record(
    team: &TeamId,
    new: NewUser,
    is_admin: bool,
) -> Result<UserRecord, ApiError> {
    let email = new.email.trim().to_lowercase();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(invalid("email is not an address"));
    }
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.len() > 80 {
        return Err(invalid("name must be 1 to 80 bytes"));
    }
    if new.password.chars().count() < 8 || new.password.len() > 1024 {
        return Err(invalid("password must be 8 to 1024 characters"));
    }
    let password = new.password;
    let password_hash = password_work(move || hash_password(&password))
        .await?
        .map_err(internal)?;
    Ok(UserRecord {
        user: User {
            id: UserId::generate(),
            team: team.clone(),
            name,
            email,
            is_admin,
        },
        password_hash,
    })
}

fn validate_domain(domain: &str) -> Result<String, ApiError> {
    let domain = domain.trim().to_lowercase();
    let ok = (2..=63).contains(&domain.len())
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !domain.starts_with('-')
        && !domain.ends_with('-');
    if ok {
        Ok(domain)
    } else {
        Err(invalid("domain must be 2 to 63 of a-z, 0-9 and '-'"))
    }
}

/// Slack's rules: lower case letters, digits, `-` and `_`, optional leading `#`.
fn validate_channel_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim().trim_start_matches('#').to_lowercase();
    let ok = !name.is_empty()
        && name.len() <= MAX_CHANNEL_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(invalid(format!(
            "channel names are 1 to {MAX_CHANNEL_NAME_BYTES} letters, digits, '-' or '_'"
        )))
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, msg)
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "internal error");
    ApiError::new(ErrorCode::Internal, "internal error")
}

fn conflict_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Conflict(Conflict::TeamDomain) => {
            ApiError::new(ErrorCode::DomainTaken, "that domain is taken")
        }
        StoreError::Conflict(Conflict::UserEmail) => {
            ApiError::new(ErrorCode::EmailTaken, "that email is already in this team")
        }
        StoreError::Conflict(Conflict::ChannelName) => {
            ApiError::new(ErrorCode::NameTaken, "a channel of that name exists")
        }
        other => store_error(other),
    }
}

fn presence_error(error: PresenceError) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, error.to_string())
}

/// Password hashes and checks (argon2id: ~19 MiB and tens of milliseconds each) run on a
/// few long-lived threads of their own, one per core. A login storm — every client
/// reconnecting after a deploy — then queues here instead of saturating every core, and
/// memory stays bounded: each thread reuses its allocator arena's 19 MiB block. On
/// tokio's blocking pool, whose threads come and go over many arenas, every hash left
/// its block behind; 100 logins took a core to ~1 GiB resident.
static PASSWORD_WORKERS: std::sync::LazyLock<std::sync::mpsc::Sender<PasswordJob>> =
    std::sync::LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        // Unbounded, but every job has a caller waiting for it: the queue is as long as
        // the number of logins in flight.
        let (jobs, queue) = std::sync::mpsc::channel::<PasswordJob>();
        let queue = Arc::new(parking_lot::Mutex::new(queue));
        for n in 0..cores {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("confab-password-{n}"))
                .spawn(move || {
                    loop {
                        // Take one job and let go of the queue before running it.
                        let job = queue.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password worker thread");
            }
        }
        jobs
    });

type PasswordJob = Box<dyn FnOnce() + Send>;

async fn password_work<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: PasswordJob = Box::new(move || {
        let _ = reply.send(work());
    });
    PASSWORD_WORKERS
        .send(job)
        .map_err(|_| internal("password workers are gone"))?;
    answer
        .await
        .map_err(|_| internal("a password worker dropped its job"))
}

/// The limits a post must meet before anything else is looked up.
fn check_post(req: &PostMessageRequest) -> Result<(), ApiError> {
    if req.text.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyMessage,
            "message text is empty",
        ));
    }
    if req.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            ErrorCode::MessageTooLong,
            format!(
                "message text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                req.text.len()
            ),
        ));
    }
    if req.client_msg_id.is_empty() || req.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES {
        return Err(invalid(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The stored message, unless another user's message holds this `client_msg_id`: that
/// one is never handed out as the caller's.
fn own_message(caller: &Caller, message: Message) -> Result<Message, ApiError> {
    if message.user != caller.user {
        return Err(invalid("client_msg_id is already used in this channel"));
    }
    Ok(message)
}

mod forward_metrics {
    //! Posts this node handed to a channel's lease holder.
    use prometheus::IntCounter;
    use std::sync::LazyLock;

    static FORWARDED: LazyLock<IntCounter> = LazyLock::new(|| {
        let counter = IntCounter::new(
            "confab_chat_posts_forwarded_total",
            "Posts forwarded to the core node holding the channel's lease",
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(counter.clone()));
        counter
    });

    pub fn forwarded() {
        FORWARDED.inc();
    }
}

/// The node name in a lease holder (`NODE@INCARNATION`).
fn holder_node(holder: &str) -> &str {
    holder.split('@').next().unwrap_or(holder)
}

/// A push sink URL the notify worker can POST to: absolute `https://` or `http://` with
/// a host, no credentials, within the length limit. Returned trimmed.
fn check_push_url(url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    let bad = |why: &str| Err(invalid(format!("push url {why}")));
    if url.is_empty() || url.len() > MAX_PUSH_URL_BYTES {
        return bad(&format!("must be 1 to {MAX_PUSH_URL_BYTES} bytes"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("must be an absolute http(s) URL");
    };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return bad("must use https or http");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || url.chars().any(char::is_whitespace) {
        return bad("must name a host (and no credentials or spaces)");
    }
    Ok(url.to_string())
}

fn push_view(subscription: PushSubscription) -> PushSubscriptionView {
    PushSubscriptionView {
        id: subscription.id,
        url: subscription.url,
        created_ts: subscription.created_ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_slack_rules() {
        assert_eq!(validate_channel_name("#General").unwrap(), "general");
        assert_eq!(validate_channel_name("dev-ops_2").unwrap(), "dev-ops_2");
        assert!(validate_channel_name("has space").is_err());
        assert!(validate_channel_name("#").is_err());
        assert!(validate_channel_name(&"x".repeat(81)).is_err());
    }

    #[test]
    fn domains_are_lowercase_dns_labels() {
        assert_eq!(validate_domain(" Acme ").unwrap(), "acme");
        assert!(validate_domain("-acme").is_err());
        assert!(validate_domain("a").is_err());
        assert!(validate_domain("ac me").is_err());
    }
}
