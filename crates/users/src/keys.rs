//! SSH public keys in the OpenSSH `authorized_keys` form, compared by their wire encoding.
//!
//! Keys are kept as the binary blob that SSH puts on the wire, so this crate needs no SSH
//! library: the SSH server encodes the key a client offers and compares the bytes.

use base64::Engine;

/// Key types accepted for user keys.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

/// One authorized public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The key type, such as `ssh-ed25519`.
    pub algorithm: String,
    /// The public key in SSH wire encoding, which starts with the type again.
    pub blob: Vec<u8>,
    pub comment: String,
}

impl AuthorizedKey {
    /// Parses `type base64 [comment]`. Options before the type (`from=...`) are not supported
    /// and are rejected rather than ignored, because ignoring a restriction would widen access.
    pub fn parse(line: &str) -> Result<AuthorizedKey, String> {
        let mut fields = line.split_whitespace();
        let algorithm = fields.next().ok_or("empty key")?;
        if line.contains("PRIVATE KEY") {
            return Err("this is a private key; give the public key (the .pub file)".into());
        }
        if !KEY_TYPES.contains(&algorithm) {
            // Echo the type only when it looks like one, so that a pasted secret is not
            // printed back in an error message.
            let shown = if algorithm.len() <= 40
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-@._".contains(c))
            {
                format!("{algorithm:?}")
            } else {
                "(not a key type)".to_owned()
            };
            return Err(format!(
                "unsupported key type {shown}; expected one of {}",
                KEY_TYPES.join(", ")
            ));
        }
        let encoded = fields
            .next()
            .ok_or("missing the base64 key after the key type")?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("invalid base64 key data: {e}"))?;
        let embedded = read_ssh_string(&blob).ok_or("truncated key data")?;
        if embedded != algorithm.as_bytes() {
            return Err(format!(
                "key data is of type {:?}, not {algorithm:?}",
                String::from_utf8_lossy(embedded)
            ));
        }
        let comment = fields.collect::<Vec<_>>().join(" ");
        Ok(AuthorizedKey {
            algorithm: algorithm.to_owned(),
            blob,
            comment,
        })
    }
}

/// Reads the first SSH `string` (a big-endian u32 length and that many bytes).
fn read_ssh_string(data: &[u8]) -> Option<&[u8]> {
    let len_bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    data.get(4..4usize.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGiXSX0bf3ZmHRD5C9y5sc9/HBSvnCIVX7e52Qpip2/D alice@laptop";

    #[test]
    fn ed25519_parsed() {
        let key = AuthorizedKey::parse(ED25519).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.blob.len(), 51);
        assert_eq!(key.comment, "alice@laptop");
    }

    #[test]
    fn type_mismatch_rejected() {
        let line = ED25519.replace("ssh-ed25519", "ssh-rsa");
        let err = AuthorizedKey::parse(&line).unwrap_err();
        assert!(err.contains("not \"ssh-rsa\""), "{err}");
    }

    #[test]
    fn options_rejected() {
        let err = AuthorizedKey::parse(&format!("from=\"10.0.0.1\" {ED25519}")).unwrap_err();
        assert!(err.contains("unsupported key type"), "{err}");
    }

    #[test]
    fn private_key_rejected_without_echo() {
        let err = AuthorizedKey::parse("-----BEGIN OPENSSH PRIVATE KEY-----").unwrap_err();
        assert!(err.contains(".pub"), "{err}");
        let err = AuthorizedKey::parse(
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
        )
        .unwrap_err();
        assert!(!err.contains("b3BlbnNz"), "{err}");
    }

    #[test]
    fn bad_base64_rejected() {
        let err = AuthorizedKey::parse("ssh-ed25519 !!!").unwrap_err();
        assert!(err.contains("base64"), "{err}");
    }
}
