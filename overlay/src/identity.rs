//! Node identity: a long-term X25519 static key (Noise links and hop handshakes) plus an Ed25519
//! signing key (descriptors), bound together by the node id
//! `id = BLAKE2s-256("warren-node-id-v1" || x25519_pub || ed25519_pub)`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use blake2::{Blake2s256, Digest};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

const KEY_FILE_MAGIC: &[u8; 8] = b"WRNKEY01";
const KEY_FILE_LEN: usize = 8 + 32 + 32;

/// A node's 32-byte identifier.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Derives the id that binds an X25519 key and an Ed25519 key.
    pub fn derive(x25519_pub: &[u8; 32], ed25519_pub: &[u8; 32]) -> NodeId {
        let mut h = Blake2s256::new();
        h.update(b"warren-node-id-v1");
        h.update(x25519_pub);
        h.update(ed25519_pub);
        NodeId(h.finalize().into())
    }

    /// First 4 bytes in hex, for logs and the dashboard.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable or writable by group/others (mode {mode:o}); chmod 600 it"
    )]
    Permissions { path: String, mode: u32 },
    #[error("key file {path} is malformed: {why}")]
    Malformed { path: String, why: &'static str },
}

/// The long-term secrets of a node.
pub struct Identity {
    x25519: StaticSecret,
    ed25519: SigningKey,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            x25519: StaticSecret::from(self.x25519.to_bytes()),
            ed25519: self.ed25519.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:?})", self.node_id())
    }
}

impl Identity {
    pub fn generate() -> Identity {
        Identity {
            x25519: StaticSecret::random_from_rng(OsRng),
            ed25519: SigningKey::generate(&mut OsRng),
        }
    }

    pub fn from_secrets(x25519: [u8; 32], ed25519: [u8; 32]) -> Identity {
        Identity {
            x25519: StaticSecret::from(x25519),
            ed25519: SigningKey::from_bytes(&ed25519),
        }
    }

    pub fn x25519_public(&self) -> [u8; 32] {
        PublicKey::from(&self.x25519).to_bytes()
    }

    pub fn x25519_secret_bytes(&self) -> [u8; 32] {
        self.x25519.to_bytes()
    }

    pub fn ed25519_public(&self) -> [u8; 32] {
        self.ed25519.verifying_key().to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.ed25519.verifying_key()
    }

    pub fn node_id(&self) -> NodeId {
        NodeId::derive(&self.x25519_public(), &self.ed25519_public())
    }

    /// The Ed25519 signing key (to sign DHT records published under this node's id).
    pub fn signing_key(&self) -> &SigningKey {
        &self.ed25519
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.ed25519.sign(msg).to_bytes()
    }

    /// Writes the key file with mode 0600 (created that way, never widened).
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut buf = Vec::with_capacity(KEY_FILE_LEN);
        buf.extend_from_slice(KEY_FILE_MAGIC);
        buf.extend_from_slice(&self.x25519.to_bytes());
        buf.extend_from_slice(&self.ed25519.to_bytes());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // A pre-existing file keeps its mode on open: force 0600.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        let r = f.write_all(&buf).and_then(|_| f.sync_all());
        buf.zeroize();
        r.map_err(io)
    }

    /// Loads a key file, refusing one that group or others may access.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        use std::os::unix::fs::PermissionsExt;
        let p = path.display().to_string();
        let meta = fs::metadata(path).map_err(|source| IdentityError::Io {
            path: p.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions { path: p, mode });
        }
        let mut data = fs::read(path).map_err(|source| IdentityError::Io {
            path: p.clone(),
            source,
        })?;
        if data.len() != KEY_FILE_LEN {
            data.zeroize();
            return Err(IdentityError::Malformed {
                path: p,
                why: "wrong length",
            });
        }
        if &data[..8] != KEY_FILE_MAGIC {
            data.zeroize();
            return Err(IdentityError::Malformed {
                path: p,
                why: "bad magic",
            });
        }
        let mut x = [0u8; 32];
        let mut e = [0u8; 32];
        x.copy_from_slice(&data[8..40]);
        e.copy_from_slice(&data[40..72]);
        data.zeroize();
        let id = Identity::from_secrets(x, e);
        x.zeroize();
        e.zeroize();
        Ok(id)
    }

    /// Loads the key file, or creates it with a fresh identity if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        if path.exists() {
            Identity::load(path)
        } else {
            let id = Identity::generate();
            id.save(path)?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_roundtrip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        let id = Identity::generate();
        id.save(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = Identity::load(&p).unwrap();
        assert_eq!(back.node_id(), id.node_id());
    }

    #[test]
    fn refuses_group_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        Identity::generate().save(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        match Identity::load(&p) {
            Err(IdentityError::Permissions { mode, .. }) => assert_eq!(mode, 0o640),
            other => panic!("expected permission error, got {other:?}"),
        }
    }

    #[test]
    fn refuses_malformed_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        fs::write(&p, b"short").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load(&p),
            Err(IdentityError::Malformed { .. })
        ));
    }

    #[test]
    fn node_id_binds_both_keys() {
        let a = Identity::generate();
        let b = Identity::generate();
        assert_ne!(
            NodeId::derive(&a.x25519_public(), &a.ed25519_public()),
            NodeId::derive(&a.x25519_public(), &b.ed25519_public())
        );
    }
}
