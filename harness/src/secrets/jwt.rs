//! NATS decentralized auth (JWT v2) by hand: operator, accounts and users signed with nkeys, plus `.creds`.
//!
//! Wire format as nats-io/jwt v2 writes it: `base64url(header) "." base64url(claims) "." base64url(sig)`,
//! no padding, header `{"typ":"JWT","alg":"ed25519-nkey"}`, ed25519 signature over the first two parts.

use std::time::{SystemTime, UNIX_EPOCH};

use super::entropy::Entropy;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::{KeyPair, KeyPairType};
use serde_json::{json, Map, Value};

/// What went wrong, and for which JWT (`what` is e.g. `account JWT "A"`).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{what}: expected a {expected} key, got a {actual:?} key")]
    WrongKeyType {
        what: String,
        expected: &'static str,
        actual: KeyPairType,
    },
    #[error("{what}: import of {subject:?} names {account:?}, which is not an account public key")]
    BadImportAccount {
        what: String,
        subject: String,
        account: String,
    },
    #[error("signing the {what}: {source}")]
    Sign {
        what: String,
        #[source]
        source: nkeys::error::Error,
    },
    #[error("reading the seed of the new user for the {what}: {source}")]
    Seed {
        what: String,
        #[source]
        source: nkeys::error::Error,
    },
    #[error("reading the {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("serializing the claims of the {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("issuing the {what}: the system clock is before the unix epoch")]
    Clock { what: String },
}

/// The trust root: its JWT is self-signed and names the system account.
#[derive(Debug)]
pub struct Operator {
    pub key: KeyPair,
    pub jwt: String,
    /// Fixed `iat` for reproducible (seeded) JWTs; `None` stamps the current time.
    pub iat: Option<u64>,
}

/// An account: its key signs user JWTs; its JWT is signed by the operator.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub key: KeyPair,
    pub jwt: String,
    pub iat: Option<u64>,
}

/// A public stream export (no activation token required).
#[derive(Debug, Clone)]
pub struct StreamExport {
    pub subject: String,
}

/// A stream import from another account.
#[derive(Debug, Clone)]
pub struct StreamImport {
    /// The exporting account's public key.
    pub from_account: String,
    /// The subject as the exporter publishes it.
    pub subject: String,
    /// Where the importer sees it, e.g. "hub.commands.>" for subject "commands.>"; `None` keeps `subject`.
    pub local_subject: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AccountSpec<'a> {
    pub name: &'a str,
    pub exports: Vec<StreamExport>,
    pub imports: Vec<StreamImport>,
    /// Unlimited JetStream limits when true; JetStream disabled for the account when false.
    pub jetstream: bool,
}

/// Subject permissions of a user; empty lists are left out (no restriction on that side).
#[derive(Debug, Default, Clone)]
pub struct UserPermissions {
    pub pub_allow: Vec<String>,
    pub pub_deny: Vec<String>,
    pub sub_allow: Vec<String>,
    pub sub_deny: Vec<String>,
}

/// nats-io/jwt's `NoLimit`.
const NO_LIMIT: i64 = -1;

impl Operator {
    /// Operator with a system account; returns the operator and the SYS account (its JWT signed by the operator).
    /// The operator JWT carries `system_account` = SYS public key.
    pub fn generate(name: &str) -> Result<(Operator, Account), JwtError> {
        Operator::generate_with(name, &mut Entropy::random())
    }

    /// As `generate`, with keys from `entropy`; a seeded one also fixes `iat`, so the JWTs repeat exactly.
    pub fn generate_with(name: &str, entropy: &mut Entropy) -> Result<(Operator, Account), JwtError> {
        let what = format!("operator key {name:?}");
        let key = raw_key(KeyPairType::Operator, entropy, &what)?;
        let sys_key = raw_key(KeyPairType::Account, entropy, &what)?;
        let iat = entropy.is_seeded().then_some(SEEDED_IAT);
        let what = format!("operator JWT {name:?}");
        let mut nats = Map::new();
        nats.insert("system_account".into(), json!(sys_key.public_key()));
        let jwt = encode(&key, &key.public_key(), name, "operator", nats, &what, iat)?;
        let operator = Operator { key, jwt, iat };
        let sys_spec = AccountSpec {
            name: "SYS",
            exports: vec![],
            imports: vec![],
            jetstream: false,
        };
        let sys = operator.account(sys_key, &sys_spec)?;
        Ok((operator, sys))
    }

    /// An account JWT for `key`, signed by this operator.
    pub fn account(&self, key: KeyPair, spec: &AccountSpec) -> Result<Account, JwtError> {
        let what = format!("account JWT {:?}", spec.name);
        expect_type(&key, KeyPairType::Account, "account", &what)?;
        let nats = account_claim(spec, &what)?;
        let jwt = encode(&self.key, &key.public_key(), spec.name, "account", nats, &what, self.iat)?;
        Ok(Account {
            name: spec.name.to_owned(),
            key,
            jwt,
            iat: self.iat,
        })
    }
}

impl Operator {
    /// `account_jwt` (one this operator signed) signed again with the user keys `revoked` added to its
    /// revocations: every JWT of those keys issued up to now is refused, and connections on them are
    /// closed once the servers have it. Issued later than the JWT it replaces, as a resolver requires.
    pub fn revoking(&self, account_jwt: &str, revoked: &[String]) -> Result<String, JwtError> {
        let what = "account JWT to revoke users of".to_string();
        let claims = claims_of(account_jwt, &what)?;
        let field = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (sub, name) = (field("sub"), field("name"));
        let old_iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        let mut nats = claims.get("nats").and_then(Value::as_object).cloned().unwrap_or_default();
        let now = unix_now(&what)?.max(old_iat + 1);
        let revocations = nats.entry("revocations").or_insert_with(|| json!({}));
        for key in revoked {
            revocations[key.as_str()] = json!(now);
        }
        encode(&self.key, &sub, &name, "account", nats, &what, Some(now))
    }
}

impl Operator {
    /// An account JWT for `account`'s key from `spec`, in place of `previous` (the revocations it holds
    /// kept), issued later than it, as a resolver requires of an update.
    pub fn account_again(&self, account: &Account, spec: &AccountSpec, previous: &str) -> Result<String, JwtError> {
        let what = format!("account JWT {:?}", spec.name);
        let old = claims_of(previous, &what)?;
        let mut nats = account_claim(spec, &what)?;
        if let Some(r) = old.get("nats").and_then(|n| n.get("revocations")) {
            nats.insert("revocations".into(), r.clone());
        }
        let old_iat = old.get("iat").and_then(Value::as_u64).unwrap_or(0);
        let now = unix_now(&what)?.max(old_iat + 1);
        encode(&self.key, &account.key.public_key(), spec.name, "account", nats, &what, Some(now))
    }
}

fn claims_of(jwt: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let payload = jwt.split('.').nth(1).ok_or_else(|| JwtError::Decode { what: what.to_string(), reason: "not a JWT".into() })?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|e| JwtError::Decode { what: what.to_string(), reason: e.to_string() })?;
    serde_json::from_slice(&bytes).map_err(|source| JwtError::Json { what: what.to_string(), source })
}

/// The public key of the user a creds file (or user JWT) is for.
pub fn user_of(creds_or_jwt: &str) -> Option<String> {
    let jwt = creds_or_jwt.lines().find(|l| l.starts_with("eyJ")).unwrap_or(creds_or_jwt).trim();
    let bytes = URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1)?).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub").and_then(Value::as_str).map(String::from)
}

/// A fresh account key. Keys come before JWTs because an import names the exporter's public key.
pub fn account_key() -> KeyPair {
    KeyPair::new_account()
}

/// An account key from `entropy`.
pub fn account_key_with(entropy: &mut Entropy) -> Result<KeyPair, JwtError> {
    raw_key(KeyPairType::Account, entropy, "account key")
}

/// `iat` of seeded JWTs: 2025-01-01T00:00:00Z (in the past, so the server accepts it).
const SEEDED_IAT: u64 = 1_735_689_600;

fn raw_key(kind: KeyPairType, entropy: &mut Entropy, what: &str) -> Result<KeyPair, JwtError> {
    KeyPair::new_from_raw(kind, entropy.bytes32()).map_err(|source| JwtError::Seed { what: what.to_owned(), source })
}

impl Account {
    /// A user of this account; returns the user JWT and its seed.
    pub fn user(&self, name: &str, perms: Option<&UserPermissions>) -> Result<(String, String), JwtError> {
        self.user_with(name, perms, &mut Entropy::random())
    }

    /// As `user`, with the user key from `entropy`.
    pub fn user_with(&self, name: &str, perms: Option<&UserPermissions>, entropy: &mut Entropy) -> Result<(String, String), JwtError> {
        let what = format!("user JWT {name:?} of account {:?}", self.name);
        let user = raw_key(KeyPairType::User, entropy, &what)?;
        let empty = UserPermissions::default();
        let perms = perms.unwrap_or(&empty);
        let mut nats = Map::new();
        nats.insert("pub".into(), permission(&perms.pub_allow, &perms.pub_deny));
        nats.insert("sub".into(), permission(&perms.sub_allow, &perms.sub_deny));
        for limit in ["subs", "data", "payload"] {
            nats.insert(limit.into(), json!(NO_LIMIT));
        }
        let jwt = encode(&self.key, &user.public_key(), name, "user", nats, &what, self.iat)?;
        let seed = user.seed().map_err(|source| JwtError::Seed { what, source })?;
        Ok((jwt, seed))
    }
}

/// The `.creds` file text, byte for byte what `nsc`/nats-io/jwt `FormatUserConfig` writes; nats-server
/// (leaf remote `credentials`) and the clients find the JWT and seed by the dashed marker lines.
pub fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user_jwt.trim(),
        seed.trim()
    )
}

fn account_claim(spec: &AccountSpec, what: &str) -> Result<Map<String, Value>, JwtError> {
    let mut nats = Map::new();
    if !spec.exports.is_empty() {
        let exports: Vec<Value> = spec
            .exports
            .iter()
            .map(|e| json!({ "name": e.subject, "subject": e.subject, "type": "stream" }))
            .collect();
        nats.insert("exports".into(), Value::Array(exports));
    }
    if !spec.imports.is_empty() {
        let imports = spec
            .imports
            .iter()
            .map(|i| import_claim(i, what))
            .collect::<Result<Vec<_>, _>>()?;
        nats.insert("imports".into(), Value::Array(imports));
    }
    nats.insert("limits".into(), account_limits(spec.jetstream));
    nats.insert("default_permissions".into(), json!({ "pub": {}, "sub": {} }));
    Ok(nats)
}

fn import_claim(import: &StreamImport, what: &str) -> Result<Value, JwtError> {
    // The server would only log "can't locate account" and drop the import; fail where the mistake is made.
    let is_account = KeyPair::from_public_key(&import.from_account)
        .map(|k| k.key_pair_type() == KeyPairType::Account)
        .unwrap_or(false);
    if !is_account {
        return Err(JwtError::BadImportAccount {
            what: what.to_owned(),
            subject: import.subject.clone(),
            account: import.from_account.clone(),
        });
    }
    let mut claim = Map::new();
    claim.insert("name".into(), json!(import.subject));
    claim.insert("subject".into(), json!(import.subject));
    claim.insert("account".into(), json!(import.from_account));
    claim.insert("type".into(), json!("stream"));
    // `local_subject` is the whole renamed subject ("hub.commands.>"); the deprecated `to` was a bare prefix
    // ("hub"). 2.15 honours both; nats-io/jwt flags `to` with a deprecation warning.
    if let Some(local) = &import.local_subject {
        claim.insert("local_subject".into(), json!(local));
    }
    Ok(Value::Object(claim))
}

/// Everything unlimited. Every field must be present: a missing field is a limit of zero to the server, not
/// "no limit" (with no `limits` at all, 2.15 refuses every user with "Authorization Violation").
/// JetStream is on for the account only when `mem_storage` or `disk_storage` is non-zero.
fn account_limits(jetstream: bool) -> Value {
    let mut limits = Map::new();
    for field in ["subs", "data", "payload", "imports", "exports", "conn", "leaf"] {
        limits.insert(field.into(), json!(NO_LIMIT));
    }
    limits.insert("wildcards".into(), json!(true));
    if jetstream {
        for field in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits.insert(field.into(), json!(NO_LIMIT));
        }
    }
    Value::Object(limits)
}

fn permission(allow: &[String], deny: &[String]) -> Value {
    let mut map = Map::new();
    if !allow.is_empty() {
        map.insert("allow".into(), json!(allow));
    }
    if !deny.is_empty() {
        map.insert("deny".into(), json!(deny));
    }
    Value::Object(map)
}

fn expect_type(key: &KeyPair, expected: KeyPairType, name: &'static str, what: &str) -> Result<(), JwtError> {
    let actual = key.key_pair_type();
    if actual == expected {
        return Ok(());
    }
    Err(JwtError::WrongKeyType {
        what: what.to_owned(),
        expected: name,
        actual,
    })
}

/// Signs a JWT of `kind` (operator/account/user) about `subject`, issued by `issuer`.
fn encode(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    kind: &str,
    mut nats: Map<String, Value>,
    what: &str,
    iat: Option<u64>,
) -> Result<String, JwtError> {
    nats.insert("type".into(), json!(kind));
    nats.insert("version".into(), json!(2));

    let mut claims = Map::new();
    let iat = match iat {
        Some(t) => t,
        None => unix_now(what)?,
    };
    claims.insert("iat".into(), json!(iat));
    claims.insert("iss".into(), json!(issuer.public_key()));
    claims.insert("name".into(), json!(name));
    claims.insert("sub".into(), json!(subject));
    claims.insert("nats".into(), Value::Object(nats));
    // jti names this exact token: the hash of the claims without it. The server only requires it be
    // present (nats-io/jwt hashes just the registered claims; hashing all of them is at least as unique).
    let unsigned = to_json(&claims, what)?;
    claims.insert("jti".into(), json!(base32_nopad(&sha512_256(&unsigned))));

    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(to_json(&claims, what)?);
    let signing_input = format!("{header}.{payload}");
    let sig = issuer.sign(signing_input.as_bytes()).map_err(|source| JwtError::Sign {
        what: what.to_owned(),
        source,
    })?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

fn to_json(claims: &Map<String, Value>, what: &str) -> Result<Vec<u8>, JwtError> {
    serde_json::to_vec(claims).map_err(|source| JwtError::Json {
        what: what.to_owned(),
        source,
    })
}

fn unix_now(what: &str) -> Result<u64, JwtError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| JwtError::Clock { what: what.to_owned() })
}

/// RFC 4648 base32, standard alphabet, no padding (Go's `base32.StdEncoding.WithPadding(NoPadding)`).
fn base32_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// SHA-512/256 (FIPS 180-4), the digest nats-server's JWTs name themselves by (`jti`).
fn sha512_256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha512_256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a JWT, checks its header and that `iss` signed it; returns the claims.
    fn decode_verified(jwt: &str) -> Value {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "three dot-separated parts");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64 header")).expect("json");
        assert_eq!(header, json!({ "typ": "JWT", "alg": "ed25519-nkey" }));
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64 claims")).expect("json");
        let issuer = KeyPair::from_public_key(claims["iss"].as_str().expect("iss")).expect("iss is an nkey");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64 signature");
        issuer
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies");
        claims
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha512_256_matches_fips_vectors() {
        assert_eq!(
            hex(&sha512_256(b"abc")),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
        assert_eq!(
            hex(&sha512_256(b"")),
            "c672b8d1ef56ed28ab87c3622c5114069bdd3ad7b8f9737498d0c01ecef0967a"
        );
        let two_blocks = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
        assert_eq!(
            hex(&sha512_256(two_blocks)),
            "3928e184fb8690f840da3988121d31be65cb9d3ef83ee6146feac861e19b563a"
        );
        assert_eq!(
            hex(&sha512_256(&[b'a'; 1000])),
            "40eb4a70d4d69815407a9e272f0101cd67e3d11262a4a0bfc087712749c7fb53"
        );
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32_nopad(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_nopad(b"f"), "MY");
        assert_eq!(base32_nopad(&[0u8; 32]).len(), 52, "a jti is 52 characters");
    }

    #[test]
    fn operator_jwt_is_self_signed_and_names_the_system_account() {
        let (op, sys) = Operator::generate("natslab").expect("operator");
        let claims = decode_verified(&op.jwt);
        assert_eq!(claims["iss"], op.key.public_key());
        assert_eq!(claims["sub"], op.key.public_key());
        assert_eq!(claims["name"], "natslab");
        assert_eq!(claims["nats"]["type"], "operator");
        assert_eq!(claims["nats"]["version"], 2);
        assert_eq!(claims["nats"]["system_account"], sys.key.public_key());

        let sys_claims = decode_verified(&sys.jwt);
        assert_eq!(sys_claims["iss"], op.key.public_key());
        assert_eq!(sys_claims["sub"], sys.key.public_key());
        assert_eq!(sys_claims["nats"]["type"], "account");
        assert!(
            sys_claims["nats"]["limits"].get("disk_storage").is_none(),
            "no JetStream for SYS"
        );
    }

    #[test]
    fn jti_is_the_hash_of_the_claims_without_it() {
        let (op, _) = Operator::generate("natslab").expect("operator");
        let mut claims = decode_verified(&op.jwt);
        let jti = claims["jti"].as_str().expect("jti").to_owned();
        claims.as_object_mut().expect("object").remove("jti");
        assert_eq!(
            jti,
            base32_nopad(&sha512_256(&serde_json::to_vec(&claims).expect("json")))
        );
    }

    #[test]
    fn account_jwt_carries_exports_imports_and_limits() {
        let (op, _) = Operator::generate("natslab").expect("operator");
        let a_key = account_key();
        let a_pub = a_key.public_key();
        let spec = AccountSpec {
            name: "B",
            exports: vec![StreamExport {
                subject: "events.>".into(),
            }],
            imports: vec![StreamImport {
                from_account: a_pub.clone(),
                subject: "commands.>".into(),
                local_subject: Some("hub.commands.>".into()),
            }],
            jetstream: true,
        };
        let b = op.account(account_key(), &spec).expect("account");
        let claims = decode_verified(&b.jwt);
        assert_eq!(claims["iss"], op.key.public_key());
        assert_eq!(claims["sub"], b.key.public_key());
        let nats = &claims["nats"];
        assert_eq!(
            nats["exports"],
            json!([{ "name": "events.>", "subject": "events.>", "type": "stream" }])
        );
        assert_eq!(
            nats["imports"],
            json!([{ "name": "commands.>", "subject": "commands.>", "account": a_pub,
                     "local_subject": "hub.commands.>", "type": "stream" }])
        );
        assert_eq!(nats["limits"]["conn"], -1);
        assert_eq!(nats["limits"]["disk_storage"], -1);
        assert_eq!(nats["limits"]["mem_storage"], -1);
    }

    #[test]
    fn bad_keys_are_refused_with_context() {
        let (op, _) = Operator::generate("natslab").expect("operator");
        let spec = AccountSpec {
            name: "A",
            exports: vec![],
            imports: vec![],
            jetstream: false,
        };
        let err = op.account(KeyPair::new_user(), &spec).expect_err("user key refused");
        assert!(err.to_string().contains("account JWT \"A\""), "{err}");

        let spec = AccountSpec {
            name: "B",
            exports: vec![],
            imports: vec![StreamImport {
                from_account: "nope".into(),
                subject: "x".into(),
                local_subject: None,
            }],
            jetstream: false,
        };
        assert!(matches!(
            op.account(account_key(), &spec),
            Err(JwtError::BadImportAccount { .. })
        ));
    }

    #[test]
    fn user_jwt_is_signed_by_its_account_with_permissions() {
        let (op, _) = Operator::generate("natslab").expect("operator");
        let spec = AccountSpec {
            name: "A",
            exports: vec![],
            imports: vec![],
            jetstream: false,
        };
        let account = op.account(account_key(), &spec).expect("account");
        let perms = UserPermissions {
            pub_deny: vec!["system.>".into()],
            ..Default::default()
        };
        let (jwt, seed) = account.user("alice", Some(&perms)).expect("user");
        let claims = decode_verified(&jwt);
        assert_eq!(claims["iss"], account.key.public_key());
        assert_eq!(claims["sub"], KeyPair::from_seed(&seed).expect("seed").public_key());
        assert_eq!(claims["nats"]["type"], "user");
        assert_eq!(claims["nats"]["pub"], json!({ "deny": ["system.>"] }));
        assert_eq!(claims["nats"]["sub"], json!({}));
        assert_eq!(claims["nats"]["subs"], -1);
    }

    #[test]
    fn creds_round_trip() {
        let (op, _) = Operator::generate("natslab").expect("operator");
        let spec = AccountSpec {
            name: "A",
            exports: vec![],
            imports: vec![],
            jetstream: false,
        };
        let (jwt, seed) = op
            .account(account_key(), &spec)
            .expect("account")
            .user("u", None)
            .expect("user");
        let text = creds(&jwt, &seed);

        // Each secret sits alone on the line after its BEGIN marker, as the Go regexp expects.
        let after = |marker: &str| {
            let mut lines = text.lines().skip_while(|l| *l != marker);
            lines.next();
            lines.next().map(str::to_owned)
        };
        assert_eq!(after("-----BEGIN NATS USER JWT-----").as_deref(), Some(jwt.as_str()));
        assert_eq!(after("-----BEGIN USER NKEY SEED-----").as_deref(), Some(seed.as_str()));
        assert!(text.contains("\n------END NATS USER JWT------\n"));
        assert!(text.contains("\n------END USER NKEY SEED------\n"));
        // And a real client parses it.
        async_nats::ConnectOptions::with_credentials(&text).expect("async-nats parses the creds");
    }
}
