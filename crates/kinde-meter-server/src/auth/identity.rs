//! The built-in issuer's identity: the public URL its tokens name as `iss`.
//!
//! The server records the identity it started with in `issuer.json` in the
//! data directory, so that `kinde-meter token --data-dir DIR` mints tokens the
//! server in DIR accepts without being told its URL again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the identity inside the data directory.
pub const IDENTITY_FILE_NAME: &str = "issuer.json";

/// The public URL assumed when no identity was ever saved: the default
/// listen address of `kinde-meter serve`.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

/// Who the built-in issuer is: tokens carry `iss` = [`issuer`](Self::issuer)
/// and `aud` = `[`[`audience`](Self::audience)`]`, mirroring Kinde's
/// `https://<subdomain>.kinde.com` and `https://<subdomain>.kinde.com/api`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerIdentity {
    /// The server's public URL (`--public-url`), as given.
    pub public_url: String,
}

impl Default for IssuerIdentity {
    fn default() -> Self {
        IssuerIdentity::new(DEFAULT_PUBLIC_URL)
    }
}

impl IssuerIdentity {
    /// An identity for the given public URL.
    pub fn new(public_url: impl Into<String>) -> Self {
        IssuerIdentity {
            public_url: public_url.into(),
        }
    }

    /// The `iss` value: the public URL without trailing slashes, so that
    /// `http://h/` and `http://h` name the same issuer.
    pub fn issuer(&self) -> String {
        self.public_url.trim_end_matches('/').to_owned()
    }

    /// The `aud` value of tokens for this server's API: `<issuer>/api`.
    pub fn audience(&self) -> String {
        format!("{}/api", self.issuer())
    }

    /// Records this identity as `<data_dir>/issuer.json`, atomically (a
    /// concurrent reader sees the old or the new file, never a partial one).
    pub fn save(&self, data_dir: &Path) -> io::Result<()> {
        let target = data_dir.join(IDENTITY_FILE_NAME);
        let mut nonce = [0u8; 8];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| io::Error::other("random source failed"))?;
        let tmp = data_dir.join(format!(
            ".{IDENTITY_FILE_NAME}.{}.{}.tmp",
            std::process::id(),
            hex::encode(nonce)
        ));
        let mut json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        json.push(b'\n');
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            // Unlike the key, a newer identity must replace an older one.
            fs::rename(&tmp, &target)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        // Best effort: persist the rename itself.
        if let Ok(dir) = File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Reads `<data_dir>/issuer.json`: `Ok(None)` if it was never saved, an
    /// error if it exists but cannot be read or parsed.
    pub fn try_load(data_dir: &Path) -> io::Result<Option<IssuerIdentity>> {
        let path = data_dir.join(IDENTITY_FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a valid issuer identity: {e}", path.display()),
            )
        })
    }

    /// Like [`try_load`](Self::try_load), but an unreadable or corrupt file
    /// counts as never saved (with a warning in the log).
    pub fn load(data_dir: &Path) -> Option<IssuerIdentity> {
        match Self::try_load(data_dir) {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring unreadable issuer identity");
                None
            }
        }
    }
}
