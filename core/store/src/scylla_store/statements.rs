//! Every CQL statement the driver runs after start-up, prepared once per connection so
//! that a request sends only an id and bound values. Grouped by table in the order of
//! the [`Store`](crate::Store) trait.

use super::cql;
use crate::StoreError;
use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

/// The columns of a channel record, in `channels`, `public_channels` and `dm_keys`.
macro_rules! channel_columns {
    () => {
        "channel_id, name, private, kind, members, created_by, dm_key"
    };
}

/// The columns of a message row.
macro_rules! message_columns {
    () => {
        "seq, message_id, user_id, client_msg_id, body, ts, thread_ts, edited_ts, deleted"
    };
}

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident = $cql:expr;)+) => {
        /// The prepared statements (see the module documentation).
        pub(super) struct Statements {
            $($(#[$doc])* pub(super) $name: PreparedStatement,)+
        }

        impl Statements {
            /// Prepares them all concurrently: connecting costs one round trip for the
            /// lot rather than one per statement.
            pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
                let ($($name,)+) = futures::try_join!($(prepare(session, $cql),)+)?;
                let mut statements = Self { $($name,)+ };
                // A claim must see every claim and commit decided before it, including
                // a Paxos round still in flight, which only a serial read completes.
                statements
                    .select_lease
                    .set_consistency(Consistency::LocalSerial);
                Ok(statements)
            }
        }
    };
}

statements! {
    // ---- teams ----
    claim_domain = "INSERT INTO team_domains (domain, team_id) VALUES (?, ?) IF NOT EXISTS";
    insert_team = "INSERT INTO teams (team_id, name, domain) VALUES (?, ?, ?)";
    select_team = "SELECT team_id, name, domain FROM teams WHERE team_id = ?";
    select_domain = "SELECT team_id FROM team_domains WHERE domain = ?";

    // ---- users ----
    claim_email =
        "INSERT INTO user_emails (team_id, email, user_id) VALUES (?, ?, ?) IF NOT EXISTS";
    /// The owner's email row, written in the team's batch: a team that does not exist
    /// yet has nobody else to race for the address.
    insert_email = "INSERT INTO user_emails (team_id, email, user_id) VALUES (?, ?, ?)";
    insert_user = "INSERT INTO users (team_id, user_id, name, email, is_admin, password_hash) \
                   VALUES (?, ?, ?, ?, ?, ?)";
    select_user = "SELECT user_id, name, email, is_admin, password_hash FROM users \
                   WHERE team_id = ? AND user_id = ?";
    select_email = "SELECT user_id FROM user_emails WHERE team_id = ? AND email = ?";

    // ---- channels ----
    claim_name =
        "INSERT INTO channel_names (team_id, name, channel_id) VALUES (?, ?, ?) IF NOT EXISTS";
    claim_dm = "INSERT INTO dm_keys (team_id, dm_key, channel_id, name, private, kind, members, \
                created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    insert_channel = concat!(
        "INSERT INTO channels (team_id, ", channel_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    );
    insert_public = concat!(
        "INSERT INTO public_channels (team_id, ", channel_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    );
    select_channel = concat!(
        "SELECT ", channel_columns!(), " FROM channels WHERE team_id = ? AND channel_id = ?"
    );
    select_dm = "SELECT channel_id, name, private, kind, members, created_by, dm_key \
                 FROM dm_keys WHERE team_id = ? AND dm_key = ?";
    select_public = concat!("SELECT ", channel_columns!(), " FROM public_channels WHERE team_id = ?");

    // ---- channel members ----
    insert_member = "INSERT INTO channel_members (team_id, channel_id, user_id) VALUES (?, ?, ?)";
    insert_member_channel =
        "INSERT INTO member_channels (team_id, user_id, channel_id) VALUES (?, ?, ?)";
    select_is_member = "SELECT user_id FROM channel_members \
                        WHERE team_id = ? AND channel_id = ? AND user_id = ?";
    select_members = "SELECT user_id FROM channel_members WHERE team_id = ? AND channel_id = ?";
    select_member_channels =
        "SELECT channel_id FROM member_channels WHERE team_id = ? AND user_id = ?";
    delete_member =
        "DELETE FROM channel_members WHERE team_id = ? AND channel_id = ? AND user_id = ?";
    delete_member_channel =
        "DELETE FROM member_channels WHERE team_id = ? AND user_id = ? AND channel_id = ?";

    // ---- channel leases (in `channel_seq`, written by LWT only) ----
    /// Read at LOCAL_SERIAL (see `prepare`).
    select_lease = "SELECT holder, epoch, lease_until FROM channel_seq \
                    WHERE team_id = ? AND channel_id = ?";
    /// The first lease of a channel: no row yet, or a row without an epoch (a channel
    /// with messages from before leases existed).
    claim_first_lease = "UPDATE channel_seq SET holder = ?, epoch = ?, lease_until = ? \
                         WHERE team_id = ? AND channel_id = ? IF epoch = null";
    /// A new holder (or a new lease of a released one) after the epoch read.
    take_over_lease = "UPDATE channel_seq SET holder = ?, epoch = ?, lease_until = ? \
                       WHERE team_id = ? AND channel_id = ? IF epoch = ?";
    renew_lease = "UPDATE channel_seq SET lease_until = ? \
                   WHERE team_id = ? AND channel_id = ? IF holder = ? AND epoch = ?";
    /// An empty holder marks a released lease: the epoch stays, so the next claim,
    /// whoever makes it, gets the next one.
    release_lease = "UPDATE channel_seq SET holder = '', lease_until = 0 \
                     WHERE team_id = ? AND channel_id = ? IF holder = ? AND epoch = ?";

    // ---- messages ----
    /// Written with an epoch-based timestamp (see the driver's module documentation), so
    /// that a later epoch's row replaces whatever a fenced writer left at that seq.
    insert_message = concat!(
        "INSERT INTO messages (team_id, channel_id, bucket, ", message_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
    );
    insert_dedup = "INSERT INTO message_dedup (team_id, channel_id, client_msg_id, seq) \
                    VALUES (?, ?, ?, ?) USING TIMESTAMP ?";
    /// The commit mark, moved only while the appender's lease epoch is current.
    commit_seq = "UPDATE channel_seq SET last_seq = ? \
                  WHERE team_id = ? AND channel_id = ? IF epoch = ?";
    select_last_seq = "SELECT last_seq FROM channel_seq WHERE team_id = ? AND channel_id = ?";
    select_dedup = "SELECT seq FROM message_dedup \
                    WHERE team_id = ? AND channel_id = ? AND client_msg_id = ?";
    select_message = concat!(
        "SELECT ", message_columns!(), " FROM messages \
         WHERE team_id = ? AND channel_id = ? AND bucket = ? AND seq = ?"
    );
    /// Newest first (the table's clustering order), below an exclusive bound.
    select_before = concat!(
        "SELECT ", message_columns!(), " FROM messages \
         WHERE team_id = ? AND channel_id = ? AND bucket = ? AND seq < ? LIMIT ?"
    );
    /// Oldest first, in `(after, upto]`.
    select_after = concat!(
        "SELECT ", message_columns!(), " FROM messages \
         WHERE team_id = ? AND channel_id = ? AND bucket = ? AND seq > ? AND seq <= ? \
         ORDER BY seq ASC LIMIT ?"
    );

    // ---- read state ----
    advance_read = "UPDATE read_state SET seq = ? \
                    WHERE team_id = ? AND user_id = ? AND channel_id = ? IF seq < ?";
    insert_read = "INSERT INTO read_state (team_id, user_id, channel_id, seq) VALUES (?, ?, ?, ?) \
                   IF NOT EXISTS";
    select_read_state = "SELECT channel_id, seq FROM read_state WHERE team_id = ? AND user_id = ?";

    // ---- push subscriptions ----
    insert_push_subscription = "INSERT INTO push_subscriptions \
                                (team_id, user_id, subscription_id, url, created_ts) \
                                VALUES (?, ?, ?, ?, ?)";
    select_push_subscriptions = "SELECT subscription_id, url, created_ts FROM push_subscriptions \
                                 WHERE team_id = ? AND user_id = ?";
    select_push_subscription = "SELECT subscription_id FROM push_subscriptions \
                                WHERE team_id = ? AND user_id = ? AND subscription_id = ?";
    delete_push_subscription = "DELETE FROM push_subscriptions \
                                WHERE team_id = ? AND user_id = ? AND subscription_id = ?";
    /// TTL in whole seconds.
    claim_push_delivery = "INSERT INTO push_deliveries (team_id, delivery_key, claimant) \
                           VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?";
    select_push_delivery = "SELECT claimant FROM push_deliveries \
                            WHERE team_id = ? AND delivery_key = ?";
}

async fn prepare(session: &Session, cql: &str) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|e| cql::prepare(&format!("prepare `{cql}`"), e))?;
    // Every statement is a read, an upsert or delete of fixed values, or a conditional
    // write whose answer the caller re-checks against its own id: running one twice
    // changes nothing, so the driver may retry them on another node.
    statement.set_is_idempotent(true);
    Ok(statement)
}
