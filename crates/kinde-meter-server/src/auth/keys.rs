//! The built-in issuer's RS256 signing key.
//!
//! The key lives in the data directory as `signing-key.pem` (unencrypted
//! PKCS#8 PEM, mode 0600). The server and `kinde-meter token` may both start on
//! a fresh directory at the same moment, so creation is race-safe: each writer
//! prepares a complete temporary file and publishes it with `hard_link`, which
//! fails when the target already exists; the loser discards its key and uses
//! the winner's.
//!
//! Key material never appears in `Debug` output, errors or logs: only the
//! `kid` (a public thumbprint) does.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// File name of the signing key inside the data directory.
pub const KEY_FILE_NAME: &str = "signing-key.pem";

/// Upper bound on the size of a key file we are willing to read. A 8192-bit
/// RSA key in PEM is about 6.5 KB; anything far larger is not a key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Smallest accepted RSA modulus, in bytes (2048 bits), as RFC 7518 requires
/// for RS256.
const MIN_MODULUS_BYTES: usize = 256;

/// Why a signing key could not be loaded or created.
///
/// Messages name the file and the fix, never the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The key file exists but could not be read.
    #[error("cannot read signing key {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A new key file could not be written.
    #[error("cannot write signing key {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "signing key {} is accessible by group or others (mode {mode:04o}); \
         restrict it with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key path exists but is not a regular file.
    #[error("signing key {} is not a regular file", path.display())]
    NotAFile {
        /// The key path.
        path: PathBuf,
    },
    /// The key file (or PEM text) does not hold a usable RSA private key.
    #[error("signing key {origin} is not a usable RSA private key: {reason}")]
    Invalid {
        /// The file path, or a description of where the PEM came from.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The crypto library failed to generate a key.
    #[error("RSA key generation failed")]
    Generate,
}

/// Makes `jsonwebtoken` use aws-lc-rs for the whole process (unless the
/// process chose a provider already), so that its choice never depends on
/// which of its crypto features other crates turned on.
pub(crate) fn use_aws_lc() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// An RSA key pair used to sign RS256 tokens, with its derived public forms
/// (JWK, `kid`, jsonwebtoken keys) computed once.
pub struct SigningKey {
    key_pair: KeyPair,
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    kid: String,
    n_b64: String,
    e_b64: String,
}

// Written by hand so that no derive can ever print key material.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `<data_dir>/signing-key.pem`, creating the directory and a new
    /// 2048-bit key (mode 0600) if there is none yet.
    ///
    /// Safe against a concurrent first start by another process or thread:
    /// both end up with the same key. An existing file that group or others
    /// can access is refused ([`KeyError::Permissions`]) rather than fixed,
    /// because the key may already have leaked.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, KeyError> {
        let path = data_dir.join(KEY_FILE_NAME);
        // Usual case: the key already exists.
        if let Some(pem) = read_key_file(&path)? {
            return Self::from_pem_with_origin(&pem, &path.display().to_string());
        }

        create_private_dir(data_dir)?;
        let key = Self::generate()?;
        let pem = key.to_pkcs8_pem()?;
        if publish_exclusive(data_dir, &path, pem.as_bytes())? {
            return Ok(key);
        }
        // Someone else published first; theirs is complete (it was fully
        // written and synced before being linked into place).
        match read_key_file(&path)? {
            Some(pem) => Self::from_pem_with_origin(&pem, &path.display().to_string()),
            None => Err(KeyError::Read {
                path,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "key file disappeared right after being created",
                ),
            }),
        }
    }

    /// Generates a new 2048-bit RSA key in memory (nothing is written).
    pub fn generate() -> Result<SigningKey, KeyError> {
        let key_pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        Self::from_parts(key_pair, "generated key")
    }

    /// Parses an unencrypted RSA private key in PEM form: PKCS#8
    /// (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    ///
    /// Meant for keys kept elsewhere than the data directory (e.g. a shared
    /// database); file permissions are not checked here.
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        Self::from_pem_with_origin(pem, "PEM input")
    }

    /// The key as unencrypted PKCS#8 PEM, for storing it. This is secret
    /// material: never log it.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der = self.key_pair.as_der().map_err(|_| KeyError::Invalid {
            origin: format!("kid {}", self.kid),
            reason: "cannot be exported as PKCS#8",
        })?;
        Ok(pem_encode("PRIVATE KEY", der.as_ref()))
    }

    /// The public key as SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub fn public_key_pem(&self) -> String {
        // The public key of a key pair that was accepted at construction is
        // always encodable; an empty string would only fail verification.
        let der = self
            .key_pair
            .public_key()
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default();
        pem_encode("PUBLIC KEY", &der)
    }

    /// The key id: the RFC 7638 JWK thumbprint (base64url SHA-256 of the
    /// canonical `{"e":..,"kty":"RSA","n":..}`). Stable for a given key, so
    /// every server sharing the key advertises the same `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key for `jsonwebtoken::encode`.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding_key
    }

    /// The public key for `jsonwebtoken` verification.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding_key
    }

    /// The public key as a JWK:
    /// `{"kty":"RSA","use":"sig","alg":"RS256","kid":..,"n":..,"e":..}`.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n_b64,
            "e": self.e_b64,
        })
    }

    fn from_pem_with_origin(pem: &str, origin: &str) -> Result<SigningKey, KeyError> {
        let invalid = |reason| KeyError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        // The first private key block; other blocks (a certificate, say) are
        // skipped. Parse errors are not shown: they could quote key material.
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| invalid("holds no PEM private key"))?;
        let key_pair = match der {
            PrivateKeyDer::Pkcs8(der) => KeyPair::from_pkcs8(der.secret_pkcs8_der())
                .map_err(|_| invalid("not an RSA PKCS#8 key"))?,
            PrivateKeyDer::Pkcs1(der) => KeyPair::from_der(der.secret_pkcs1_der())
                .map_err(|_| invalid("not an RSA PKCS#1 key"))?,
            _ => return Err(invalid("not an RSA key")),
        };
        Self::from_parts(key_pair, origin)
    }

    fn from_parts(key_pair: KeyPair, origin: &str) -> Result<SigningKey, KeyError> {
        let invalid = |reason| KeyError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        if key_pair.public_modulus_len() < MIN_MODULUS_BYTES {
            return Err(invalid("RSA keys shorter than 2048 bits are not accepted"));
        }
        let public = key_pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let n_b64 = URL_SAFE_NO_PAD.encode(&n);
        let e_b64 = URL_SAFE_NO_PAD.encode(&e);
        let kid = rsa_thumbprint(&n_b64, &e_b64);
        // jsonwebtoken signs with the PKCS#1 key, which it extracts from
        // PKCS#8 PEM itself (aws-lc-rs exports PKCS#8 only).
        let pkcs8 = key_pair
            .as_der()
            .map_err(|_| invalid("cannot be exported as PKCS#8"))?;
        let encoding_key =
            EncodingKey::from_rsa_pem(pem_encode("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
                .map_err(|_| invalid("rejected by jsonwebtoken"))?;
        use_aws_lc();
        let decoding_key = DecodingKey::from_rsa_raw_components(&n, &e);
        Ok(SigningKey {
            key_pair,
            encoding_key,
            decoding_key,
            kid,
            n_b64,
            e_b64,
        })
    }
}

/// A JWKS document `{"keys":[jwk, ...]}` for the given keys, as served at
/// `/.well-known/jwks`.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// RFC 7638 thumbprint of an RSA public key given its base64url `n` and `e`.
pub(crate) fn rsa_thumbprint(n_b64: &str, e_b64: &str) -> String {
    // Members in lexicographic order, no whitespace, as RFC 7638 §3.2
    // requires; base64url never needs JSON escaping.
    let canonical = format!(r#"{{"e":"{e_b64}","kty":"RSA","n":"{n_b64}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Reads the key file if it exists, after checking (on the opened file, so
/// nothing can be swapped in between) that it is a private regular file.
fn read_key_file(path: &Path) -> Result<Option<String>, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    Ok(Some(text))
}

/// Creates the data directory (and parents) if missing; directories created
/// here get mode 0700 since they will hold the private key.
fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| KeyError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `contents` to `target` only if `target` does not exist yet, never
/// exposing a partial file. Returns `false` if another writer got there first.
fn publish_exclusive(dir: &Path, target: &Path, contents: &[u8]) -> Result<bool, KeyError> {
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Generate)?;
    let tmp = dir.join(format!(
        ".{KEY_FILE_NAME}.{}.{}.tmp",
        std::process::id(),
        hex::encode(nonce)
    ));
    let write_err = |source| KeyError::Write {
        path: tmp.clone(),
        source,
    };

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created private from the start: the key is never readable by
        // others, not even briefly.
        options.mode(0o600);
    }
    let written = (|| -> io::Result<()> {
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // The umask can only remove bits, but a umask like 0o277 would
            // leave 0400; make the mode exactly 0600 regardless.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        // Durable before it becomes visible under its real name.
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }

    // `link` (unlike `rename`) refuses to replace an existing file, which is
    // exactly the "first writer wins" rule we need.
    let linked = fs::hard_link(&tmp, target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Persist the new directory entry; best effort, since some
            // platforms cannot fsync a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(KeyError::Write {
            path: target.to_owned(),
            source,
        }),
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 is ASCII, so byte chunks are char boundaries.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}
