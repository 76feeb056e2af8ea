//! Session tokens: JWTs signed with Ed25519. The header's algorithm is never trusted —
//! verification accepts EdDSA only, so `alg: none` and HMAC-confusion tokens fail.

use crate::AuthError;
use confab_proto::{TeamId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Allowed clock skew between the core that signs and the edge that verifies.
const LEEWAY_SECS: u64 = 5;

/// What a token asserts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    #[serde(rename = "sub")]
    pub user: UserId,
    /// The user's team: every query made with this token is scoped to it.
    pub team: TeamId,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// An Ed25519 key pair as PEM text (PKCS#8 private key, SPKI public key).
#[derive(Clone)]
pub struct SigningKeyPair {
    private_pem: String,
    public_pem: String,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair").finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Result<Self, AuthError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self {
            private_pem: pair.serialize_pem(),
            public_pem: pair.public_key_pem(),
        })
    }

    /// Loads `dir/jwt-ed25519.pem`, or generates and writes it (mode 0600) on first start,
    /// so tokens stay valid across restarts.
    pub fn load_or_generate(dir: &Path) -> Result<Self, AuthError> {
        let private_path = dir.join("jwt-ed25519.pem");
        let io = |e: std::io::Error| AuthError::Key(format!("{}: {e}", private_path.display()));
        if private_path.exists() {
            let private_pem = std::fs::read_to_string(&private_path).map_err(io)?;
            let pair = rcgen::KeyPair::from_pem(&private_pem)
                .map_err(|e| AuthError::Key(e.to_string()))?;
            return Ok(Self {
                public_pem: pair.public_key_pem(),
                private_pem,
            });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let pair = Self::generate()?;
        write_private(&private_path, pair.private_pem.as_bytes()).map_err(io)?;
        Ok(pair)
    }

    /// The public key, PEM: all an edge needs to verify tokens.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints tokens. Lives in the core only.
pub struct TokenIssuer {
    key: EncodingKey,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer whose tokens live for `lifetime`.
    pub fn new(keys: &SigningKeyPair, lifetime: Duration) -> Result<Self, AuthError> {
        let key = EncodingKey::from_ed_pem(keys.private_pem.as_bytes())
            .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self { key, lifetime })
    }

    /// A token for `user` of `team`.
    pub fn issue(&self, team: &TeamId, user: &UserId) -> Result<String, AuthError> {
        let iat = now_secs();
        self.issue_claims(&Claims {
            user: user.clone(),
            team: team.clone(),
            iat,
            exp: iat + self.lifetime.as_secs(),
        })
    }

    /// Signs arbitrary claims (tests use this for expired tokens).
    pub fn issue_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|e| AuthError::Key(e.to_string()))
    }
}

/// Checks tokens with the public key only. Edges hold this, never the issuer.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed by the holder of `public_pem`'s private key.
    pub fn from_public_pem(public_pem: &str) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ed_pem(public_pem.as_bytes())
            .map_err(|e| AuthError::Key(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self { key, validation })
    }

    /// The claims of a valid, unexpired token signed by our key.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let keys = SigningKeyPair::generate().unwrap();
        let issuer = TokenIssuer::new(&keys, Duration::from_secs(3600)).unwrap();
        let verifier = TokenVerifier::from_public_pem(keys.public_pem()).unwrap();
        (issuer, verifier)
    }

    #[test]
    fn round_trip_names_user_and_team() {
        let (issuer, verifier) = setup();
        let token = issuer.issue(&"T1".into(), &"U1".into()).unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.user.as_str(), "U1");
        assert_eq!(claims.team.as_str(), "T1");
    }

    #[test]
    fn rejects_expired_forged_and_alg_none() {
        let (issuer, verifier) = setup();
        let past = now_secs() - 3600;
        let expired = issuer
            .issue_claims(&Claims {
                user: "U1".into(),
                team: "T1".into(),
                iat: past - 10,
                exp: past,
            })
            .unwrap();
        assert!(verifier.verify(&expired).is_err());

        let (other_issuer, _) = setup();
        let forged = other_issuer.issue(&"T1".into(), &"U1".into()).unwrap();
        assert!(verifier.verify(&forged).is_err());

        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(
            r#"{{"sub":"U1","team":"T1","iat":1,"exp":{}}}"#,
            now_secs() + 999
        ));
        assert!(verifier.verify(&format!("{header}.{body}.")).is_err());
        assert!(verifier.verify("").is_err());
        assert!(verifier.verify("garbage").is_err());
    }

    #[test]
    fn keys_persist_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = SigningKeyPair::load_or_generate(dir.path()).unwrap();
        let second = SigningKeyPair::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.public_pem(), second.public_pem());
        let token = TokenIssuer::new(&first, Duration::from_secs(60))
            .unwrap()
            .issue(&"T".into(), &"U".into())
            .unwrap();
        TokenVerifier::from_public_pem(second.public_pem())
            .unwrap()
            .verify(&token)
            .unwrap();
    }
}
