//! Checkpoints (C2SP tlog-checkpoint in a C2SP signed note) and the Ed25519 keys that sign
//! them (supervision contract §2).
//!
//! A checkpoint's body is three lines — origin `leadbridge/<deployment>/<log>`, tree size,
//! base64 root — each ending in a newline; a blank line and one signature line per signer
//! follow: `— <key name> <base64(key id ‖ signature)>`, the key id being the first 4 bytes
//! of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key).
//!
//! Promise: [`verify`] accepts a checkpoint only when its body is well-formed and carries a
//! valid signature by the given key over exactly that body; a signature by another key, or
//! over another body, or a body that does not parse, is refused with what is wrong. A key
//! file that is missing or unreadable is an error naming its path.

use std::path::{Path, PathBuf};

use base64::prelude::{Engine, BASE64_STANDARD};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use super::verify::Digest32;

/// The signed-note algorithm byte of Ed25519.
const ED25519: u8 = 0x01;

/// Why a checkpoint or key was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("signing key {path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("verifier key {0:?} is not <name>+<8 hex key id>+<base64 of 0x01 and 32 bytes>")]
    VerifierKey(String),
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint has no valid signature by {0}")]
    Unsigned(String),
    #[error("checkpoint is for origin {found:?}, not {expected:?}")]
    Origin { expected: String, found: String },
}

/// What a checkpoint commits to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Digest32,
}

impl Checkpoint {
    /// The note body the signatures cover.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64_STANDARD.encode(self.root)
        )
    }

    /// Parses a body (exactly three lines, each ending in a newline).
    pub fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the body does not end in a newline"))?
            .split('\n')
            .collect();
        let [origin, size, root] = lines[..] else {
            return Err(malformed("the body is not exactly three lines"));
        };
        if origin.is_empty() || origin.chars().any(char::is_whitespace) {
            return Err(malformed("the origin line is empty or has spaces"));
        }
        // No sign, no leading zero: one text per size.
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(malformed("the size line is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| malformed("the size does not fit 64 bits"))?;
        // Standard decoding is canonical: it refuses missing padding and non-zero trailing
        // bits, so one root has one text.
        let root: Digest32 = BASE64_STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("the root line is not the base64 of 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// A log's signing key and its name.
pub struct LogKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        write!(f, "LogKey({})", self.verifier_key())
    }
}

/// The key id of a named Ed25519 public key.
pub fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0x0a, ED25519]);
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

impl LogKey {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> LogKey {
        assert!(valid_name(name), "a key name has no spaces or '+'");
        LogKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// Reads a key file holding `PRIVATE+KEY+<name>+<8 hex id>+<base64 of 0x01 ‖ seed>`.
    pub fn load(path: &Path) -> Result<LogKey, CheckpointError> {
        let problem = |problem: String| CheckpointError::Key {
            path: path.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|error| problem(format!("cannot read it: {error}")))?;
        LogKey::parse(text.trim()).map_err(problem)
    }

    fn parse(text: &str) -> Result<LogKey, String> {
        let shape = "not PRIVATE+KEY+<name>+<8 hex key id>+<base64 key>";
        // The base64 key may itself hold '+'.
        let parts: Vec<&str> = text.splitn(5, '+').collect();
        let ["PRIVATE", "KEY", name, id, key] = parts[..] else {
            return Err(shape.to_owned());
        };
        let bytes = BASE64_STANDARD.decode(key).map_err(|_| shape.to_owned())?;
        let Some((&ED25519, rest)) = bytes.split_first() else {
            return Err("not an Ed25519 key".to_owned());
        };
        let Ok(seed) = <[u8; 32]>::try_from(rest) else {
            return Err("not an Ed25519 key".to_owned());
        };
        if !valid_name(name) {
            return Err(format!("the key name {name:?} has spaces or '+'"));
        }
        let key = LogKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        };
        if id != hex::encode(key_id(name, &key.key.verifying_key())) {
            return Err("the key id does not match the key".to_owned());
        }
        Ok(key)
    }

    /// The private key file's text.
    pub fn private_text(&self) -> String {
        let mut bytes = vec![ED25519];
        bytes.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, &self.key.verifying_key())),
            BASE64_STANDARD.encode(bytes)
        )
    }

    /// Reads the key at `path`, or creates it there (readable by its owner only) when no
    /// file exists: what the embedded default does under `<data-dir>/keys/`.
    pub fn load_or_create(path: &Path, name: &str) -> Result<LogKey, CheckpointError> {
        if path.exists() {
            return LogKey::load(path);
        }
        let key = LogKey::generate(name);
        let problem = |problem: String| CheckpointError::Key {
            path: path.to_owned(),
            problem,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|error| problem(format!("cannot create its directory: {error}")))?;
        }
        crate::shared::private_fs::write_private(path, key.private_text().as_bytes())
            .map_err(|error| problem(format!("cannot write it: {error}")))?;
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<8 hex key id>+<base64 of 0x01 ‖ public key>`, the signed-note verifier key.
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, &self.key.verifying_key())
    }

    /// The signed note of `checkpoint`: its body, a blank line, this key's signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        format!("{body}\n{}", self.signature_line(&body))
    }

    /// One signature line over `body`, as a witness adds its own to a checkpoint.
    pub fn signature_line(&self, body: &str) -> String {
        let signature = self.key.sign(body.as_bytes());
        let mut bytes = key_id(&self.name, &self.key.verifying_key()).to_vec();
        bytes.extend_from_slice(&signature.to_bytes());
        format!("— {} {}\n", self.name, BASE64_STANDARD.encode(bytes))
    }
}

/// The verifier-key form of a named public key.
pub fn verifier_key(name: &str, public: &VerifyingKey) -> String {
    let mut bytes = vec![ED25519];
    bytes.extend_from_slice(public.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public)),
        BASE64_STANDARD.encode(bytes)
    )
}

/// A parsed verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub id: [u8; 4],
    pub key: VerifyingKey,
}

impl VerifierKey {
    /// The key's verifier-key text (`<name>+<key id>+<base64>`).
    pub fn text(&self) -> String {
        verifier_key(&self.name, &self.key)
    }

    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let refuse = || CheckpointError::VerifierKey(text.to_owned());
        let parts: Vec<&str> = text.trim().splitn(3, '+').collect();
        let [name, id, key] = parts[..] else {
            return Err(refuse());
        };
        let bytes = BASE64_STANDARD.decode(key).map_err(|_| refuse())?;
        let Some((&ED25519, rest)) = bytes.split_first() else {
            return Err(refuse());
        };
        let Ok(public) = <[u8; 32]>::try_from(rest) else {
            return Err(refuse());
        };
        let key = VerifyingKey::from_bytes(&public).map_err(|_| refuse())?;
        if !valid_name(name) || id != hex::encode(key_id(name, &key)) {
            return Err(refuse());
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        })
    }
}

/// A signed note split into its body and its signature lines (name, key id, signature).
pub struct SignedNote {
    pub body: String,
    pub signatures: Vec<(String, [u8; 4], [u8; 64])>,
}

impl SignedNote {
    pub fn parse(text: &str) -> Result<SignedNote, CheckpointError> {
        let malformed = |why: &str| CheckpointError::Malformed(why.to_owned());
        let split = text
            .find("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let body = &text[..split + 1];
        let lines = text[split + 2..]
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the last signature line does not end in a newline"))?;
        let mut signatures = Vec::new();
        for line in lines.split('\n') {
            let rest = line
                .strip_prefix("— ")
                .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
            let (name, encoded) = rest
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line has no signature"))?;
            let bytes = BASE64_STANDARD
                .decode(encoded)
                .map_err(|_| malformed("a signature is not base64"))?;
            let (Ok(id), Ok(signature)) = (
                <[u8; 4]>::try_from(bytes.get(..4).unwrap_or_default()),
                <[u8; 64]>::try_from(bytes.get(4..).unwrap_or_default()),
            ) else {
                return Err(malformed("a signature is not a key id and 64 bytes"));
            };
            if !valid_name(name) {
                return Err(malformed("a signature's key name has spaces or '+'"));
            }
            signatures.push((name.to_owned(), id, signature));
        }
        if signatures.is_empty() {
            return Err(malformed("no signature"));
        }
        Ok(SignedNote {
            body: body.to_owned(),
            signatures,
        })
    }

    /// The signature line of `key`'s signature over this body, when it has a valid one.
    pub fn signature_line_of(&self, key: &VerifierKey) -> Option<String> {
        self.signatures
            .iter()
            .find(|(name, id, signature)| {
                *name == key.name
                    && *id == key.id
                    && key
                        .key
                        .verify(
                            self.body.as_bytes(),
                            &ed25519_dalek::Signature::from_bytes(signature),
                        )
                        .is_ok()
            })
            .map(|(name, id, signature)| {
                let mut bytes = id.to_vec();
                bytes.extend_from_slice(signature);
                format!("— {name} {}\n", BASE64_STANDARD.encode(bytes))
            })
    }

    /// Whether `key` signed this body.
    pub fn signed_by(&self, key: &VerifierKey) -> bool {
        self.signature_line_of(key).is_some()
    }
}

/// Verifies a checkpoint's text against its log's key and origin.
pub fn verify(text: &str, key: &VerifierKey, origin: &str) -> Result<Checkpoint, CheckpointError> {
    let note = SignedNote::parse(text)?;
    let checkpoint = Checkpoint::parse_body(&note.body)?;
    if checkpoint.origin != origin {
        return Err(CheckpointError::Origin {
            expected: origin.to_owned(),
            found: checkpoint.origin,
        });
    }
    if !note.signed_by(key) {
        return Err(CheckpointError::Unsigned(key.name.clone()));
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signed_note::{Note, StandardVerifier, VerifierList};

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "leadbridge/zibo/hub".into(),
            size: 9,
            root: crate::shared::tlog::verify::root_of(&[[7u8; 32], [8u8; 32]]),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_its_key_and_with_the_signed_note_crate() {
        let key = LogKey::generate("leadbridge-zibo-hub");
        let text = key.sign(&checkpoint());
        let verifier = VerifierKey::parse(&key.verifier_key()).unwrap();
        assert_eq!(
            verify(&text, &verifier, "leadbridge/zibo/hub").unwrap(),
            checkpoint()
        );
        assert!(text.starts_with("leadbridge/zibo/hub\n9\n"), "{text}");
        assert!(text.contains("\n\n— leadbridge-zibo-hub "), "{text}");

        // An independent implementation of C2SP signed-note agrees on the key id, the
        // verifier key and the signature.
        let standard = StandardVerifier::new(&key.verifier_key()).unwrap();
        let note = Note::from_bytes(text.as_bytes()).unwrap();
        let (verified, _) = note
            .verify(&VerifierList::new(vec![Box::new(standard)]))
            .unwrap();
        assert_eq!(verified.len(), 1);

        // The key file reads back as the same key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/hub.key");
        let created = LogKey::load_or_create(&path, "leadbridge-zibo-hub").unwrap();
        let again = LogKey::load_or_create(&path, "ignored").unwrap();
        assert_eq!(created.verifier_key(), again.verifier_key());
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_or_over_another_body_is_refused() {
        let key = LogKey::generate("leadbridge-zibo-hub");
        let verifier = VerifierKey::parse(&key.verifier_key()).unwrap();
        let origin = "leadbridge/zibo/hub";
        let text = key.sign(&checkpoint());

        // Another key under the same name.
        let other = LogKey::generate("leadbridge-zibo-hub").sign(&checkpoint());
        assert!(matches!(
            verify(&other, &verifier, origin),
            Err(CheckpointError::Unsigned(_))
        ));
        // A valid signature moved onto another body.
        let mut bigger = checkpoint();
        bigger.size = 10;
        let signature = text.split("\n\n").nth(1).unwrap();
        let moved = format!("{}\n{signature}", bigger.body());
        assert!(matches!(
            verify(&moved, &verifier, origin),
            Err(CheckpointError::Unsigned(_))
        ));
        // Another log's origin.
        assert!(matches!(
            verify(&text, &verifier, "leadbridge/zibo/police"),
            Err(CheckpointError::Origin { .. })
        ));
        // Every single-byte change of the text fails, one way or another.
        for position in 0..text.len() {
            if !text.is_char_boundary(position) || !text.is_char_boundary(position + 1) {
                continue;
            }
            let mut bytes = text.clone().into_bytes();
            bytes[position] ^= 0x01;
            let Ok(changed) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(
                verify(&changed, &verifier, origin).is_err(),
                "byte {position} changed still verifies: {changed:?}"
            );
        }
        // Bodies that do not parse.
        for body in [
            "leadbridge/zibo/hub\n9\n",
            "leadbridge/zibo/hub\n09\nAAAA\n",
            "leadbridge/zibo/hub\n-1\nAAAA\n",
            "leadbridge/zibo/hub\n9\nAAAA\n",
            "leadbridge/zibo/hub\n9\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nextra\n",
            // Non-zero trailing bits, missing padding: not the canonical text of a root.
            "leadbridge/zibo/hub\n9\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",
            "leadbridge/zibo/hub\n9\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        ] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn a_missing_or_malformed_key_file_is_an_error_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.key");
        let error = LogKey::load(&missing).unwrap_err().to_string();
        assert!(
            error.contains("absent.key") && error.contains("cannot read"),
            "{error}"
        );
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "PRIVATE+KEY+x+00000000+AAAA").unwrap();
        let error = LogKey::load(&bad).unwrap_err().to_string();
        assert!(error.contains("bad.key"), "{error}");
        // A key id that does not match the key.
        let key = LogKey::generate("hub");
        let text = key.private_text();
        let mut parts: Vec<String> = text.splitn(5, '+').map(str::to_owned).collect();
        parts[3] = "00000000".into();
        std::fs::write(&bad, parts.join("+")).unwrap();
        let error = LogKey::load(&bad).unwrap_err().to_string();
        assert!(error.contains("key id does not match"), "{error}");
        assert!(VerifierKey::parse("hub+00000000+AAAA").is_err());
        // An empty key is refused, not a panic.
        assert!(VerifierKey::parse("hub+00000000+").is_err());
        std::fs::write(&bad, "PRIVATE+KEY+hub+00000000+").unwrap();
        assert!(LogKey::load(&bad).is_err());
    }
}
