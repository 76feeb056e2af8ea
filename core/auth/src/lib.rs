//! Identity for confab (DESIGN.md §8): argon2 password hashes, and session tokens that
//! are JWTs signed with Ed25519 (EdDSA). The core holds the [`TokenIssuer`]; edges get
//! only a [`TokenVerifier`] built from the public key and cannot mint tokens.

mod password;
mod token;

pub use password::{hash_password, verify_password};
pub use token::{Claims, SigningKeyPair, TokenIssuer, TokenVerifier};

/// Why authentication failed. The client sees only `not_authed`; the variant is for logs.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("key material: {0}")]
    Key(String),
    #[error("password hashing: {0}")]
    Hash(String),
}
