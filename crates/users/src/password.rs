//! Password hashes: argon2 PHC strings and bcrypt.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// A stored password hash, parsed once when the users file is loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPassword {
    kind: HashKind,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HashKind {
    Argon2,
    Bcrypt,
}

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredPassword({:?}, <hidden>)", self.kind)
    }
}

impl StoredPassword {
    /// Parses an argon2 PHC string (`$argon2id$…`, `$argon2i$…`, `$argon2d$…`) or a bcrypt
    /// hash (`$2a$`, `$2b$`, `$2y$`). Plain-text passwords are rejected.
    pub fn parse(text: &str) -> Result<StoredPassword, String> {
        if text.starts_with("$argon2") {
            PasswordHash::new(text).map_err(|e| format!("invalid argon2 hash: {e}"))?;
            return Ok(StoredPassword {
                kind: HashKind::Argon2,
                text: text.to_owned(),
            });
        }
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
        {
            // bcrypt hashes are always 60 characters: prefix, cost, 22 salt and 31 hash characters.
            if text.len() != 60 {
                return Err("invalid bcrypt hash: expected 60 characters".into());
            }
            return Ok(StoredPassword {
                kind: HashKind::Bcrypt,
                text: text.to_owned(),
            });
        }
        Err(
            "not a supported password hash; use `ferry hash-password` to make an argon2id hash"
                .into(),
        )
    }

    /// Checks `password` against the hash. This is slow on purpose (tens of milliseconds),
    /// so async callers run it on a blocking thread.
    pub fn verify(&self, password: &str) -> bool {
        match self.kind {
            HashKind::Argon2 => match PasswordHash::new(&self.text) {
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
                Err(_) => false,
            },
            HashKind::Bcrypt => bcrypt::verify(password, &self.text).unwrap_or(false),
        }
    }

    /// Returns the hash text, which changes whenever the password changes.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Hashes `password` with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("failed to hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let stored = StoredPassword::parse(&hash).unwrap();
        assert!(stored.verify("s3cret"));
        assert!(!stored.verify("s3cret "));
    }

    #[test]
    fn bcrypt_verifies() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let stored = StoredPassword::parse(&hash).unwrap();
        assert!(stored.verify("pw"));
        assert!(!stored.verify("other"));
    }

    #[test]
    fn plain_text_rejected() {
        let err = StoredPassword::parse("hunter2").unwrap_err();
        assert!(err.contains("hash-password"), "{err}");
    }

    #[test]
    fn debug_hides_hash() {
        let stored = StoredPassword::parse(&hash_password("x").unwrap()).unwrap();
        assert!(!format!("{stored:?}").contains("argon2id$"));
    }
}
