//! Small adapters between the `scylla` driver and the store: how driver errors map onto
//! [`StoreError`], how a lightweight transaction's answer is read, and the retry of a
//! lightweight transaction whose outcome Paxos contention left unknown.

use crate::StoreError;
use scylla::client::session::Session;
use scylla::errors::{
    DbError, ExecutionError, NewSessionError, NextPageError, NextRowError, PagerExecutionError,
    PrepareError, RequestAttemptError, WriteType,
};
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::fmt::Display;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Attempts of one lightweight transaction before contention is reported as `Unavailable`.
const LWT_ATTEMPTS: u32 = 6;
/// First back-off after a contended attempt; doubled after each further one.
const LWT_FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// The answer to a conditional statement (`INSERT … IF NOT EXISTS`, `UPDATE … IF …`).
#[derive(Debug)]
pub(super) struct Lwt {
    pub(super) applied: bool,
    /// When not applied, the current values of the row's columns that Cassandra sends
    /// back (all of them for `IF NOT EXISTS`, the condition's columns for `IF col …`);
    /// no values for a row that does not exist.
    columns: Vec<(String, Option<CqlValue>)>,
}

impl Lwt {
    fn parse(result: QueryResult, what: &str) -> Result<Self, StoreError> {
        let rows = result.into_rows_result().map_err(|e| decode(what, e))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|spec| spec.name().to_owned())
            .collect();
        let row: Row = rows.single_row().map_err(|e| decode(what, e))?;
        let mut columns: Vec<(String, Option<CqlValue>)> =
            names.into_iter().zip(row.columns).collect();
        let applied = match columns.iter().position(|(name, _)| name == "[applied]") {
            Some(i) => match columns.remove(i).1 {
                Some(CqlValue::Boolean(applied)) => applied,
                other => {
                    return Err(decode(what, format!("[applied] is {other:?}")));
                }
            },
            None => return Err(decode(what, "no [applied] column in the answer")),
        };
        Ok(Self { applied, columns })
    }

    fn value(&self, name: &str) -> Option<&CqlValue> {
        self.columns
            .iter()
            .find(|(column, _)| column == name)
            .and_then(|(_, value)| value.as_ref())
    }

    /// A text column of the existing row, if it was sent back and is not null.
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        self.value(name)
            .and_then(CqlValue::as_text)
            .map(String::as_str)
    }

    /// A bigint column of the existing row, if it was sent back and is not null.
    pub(super) fn bigint(&self, name: &str) -> Option<i64> {
        self.value(name).and_then(CqlValue::as_bigint)
    }
}

/// Runs a lightweight transaction. When Paxos contention times it out, its outcome is
/// unknown (it may have been applied), so it is run again after a jittered back-off:
/// every caller re-checks the returned row against its own id, which makes a re-run
/// that finds its own earlier write look exactly like a first-time success.
pub(super) async fn conditional(
    session: &Session,
    statement: &PreparedStatement,
    values: &(impl SerializeRow + Sync),
    what: &str,
) -> Result<Lwt, StoreError> {
    let mut backoff = LWT_FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match session.execute_unpaged(statement, values).await {
            Ok(result) => return Lwt::parse(result, what),
            Err(e) if attempt < LWT_ATTEMPTS && is_contention(&e) => {
                tracing::debug!(error = %e, attempt, "{what}: contended, retrying");
                tokio::time::sleep(jitter(backoff)).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(e) => return Err(execution(what, e)),
        }
    }
}

/// A Paxos round that lost to concurrent rounds on the same partition.
fn is_contention(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => match db {
            DbError::WriteTimeout { write_type, .. } => *write_type == WriteType::Cas,
            DbError::ReadTimeout { consistency, .. } => consistency.is_serial(),
            _ => false,
        },
        _ => false,
    }
}

/// Between `d / 2` and `d`, so that contenders that collided once spread out.
fn jitter(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = d / 2;
    half + half.mul_f64((random % 1024) as f64 / 1024.0)
}

// ---- error mapping: "cannot serve now" is Unavailable, "our bug or bad data" is Internal ----

pub(super) fn decode(what: &str, e: impl Display) -> StoreError {
    StoreError::Internal(format!("{what}: cannot decode: {e}"))
}

fn unavailable(what: &str, e: impl Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn internal(what: &str, e: impl Display) -> StoreError {
    StoreError::Internal(format!("{what}: {e}"))
}

pub(super) fn execution(what: &str, e: ExecutionError) -> StoreError {
    match e {
        ExecutionError::LastAttemptError(attempt) => attempt_error(what, attempt),
        ExecutionError::PrepareError(e) => prepare(what, e),
        ExecutionError::BadQuery(e) => internal(what, e),
        // No node, no connection, client timeout, schema agreement or metadata trouble:
        // all say the cluster cannot serve this request now.
        e => unavailable(what, e),
    }
}

pub(super) fn prepare(what: &str, e: PrepareError) -> StoreError {
    match e {
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_error(what, first_attempt),
        PrepareError::PreparedStatementIdsMismatch => internal(what, e),
        e => unavailable(what, e),
    }
}

fn attempt_error(what: &str, e: RequestAttemptError) -> StoreError {
    match &e {
        RequestAttemptError::DbError(db, _) => match db {
            // The statement or the schema is wrong: a bug (or a migration not applied),
            // which retrying elsewhere will not fix.
            DbError::SyntaxError
            | DbError::Invalid
            | DbError::AlreadyExists { .. }
            | DbError::FunctionFailure { .. }
            | DbError::ConfigError
            | DbError::ProtocolError => internal(what, e),
            // Timeouts, unavailable replicas, overload, bootstrapping, auth trouble…
            _ => unavailable(what, e),
        },
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => unavailable(what, e),
        // Frames or values we could not (de)serialize.
        _ => internal(what, e),
    }
}

pub(super) fn pager(what: &str, e: PagerExecutionError) -> StoreError {
    match e {
        PagerExecutionError::PrepareError(e) => prepare(what, e),
        PagerExecutionError::SerializationError(e) => internal(what, e),
        PagerExecutionError::NextPageError(e) => next_page(what, e),
        e => unavailable(what, e),
    }
}

fn next_page(what: &str, e: NextPageError) -> StoreError {
    match e {
        NextPageError::RequestFailure(e) => execution(what, e.into_execution_error()),
        e @ (NextPageError::PartitionKeyError(_)
        | NextPageError::ResultMetadataParseError(_)
        | NextPageError::TypeCheckError(_)) => decode(what, e),
        e => unavailable(what, e),
    }
}

pub(super) fn next_row(what: &str, e: NextRowError) -> StoreError {
    match e {
        NextRowError::NextPageError(e) => next_page(what, e),
        e => decode(what, e),
    }
}

pub(super) fn new_session(e: NewSessionError) -> StoreError {
    match e {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
            internal("cassandra session configuration", e)
        }
        e => unavailable("cannot connect to cassandra", e),
    }
}
