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

/// SHA-512/256 (FIPS 180-4): SHA-512 with its own initial hash, truncated to 32 bytes. Hand-rolled for
/// the jti alone, to avoid a new dependency; it names a token and protects nothing.
fn sha512_256(data: &[u8]) -> [u8; 32] {
    let mut state: [u64; 8] = [
        0x22312194fc2bf72c,
        0x9f555fa3c84c64c2,
        0x2393b86b6f53b151,
        0x963877195940eabd,
        0x96283ee2a88effe3,
        0xbe5e1e2553863992,
        0x2b0199fc2c85b8aa,
        0x0eb72ddc81c52ca2,
    ];
    // Padding: 0x80, zeros to 112 mod 128, then the bit length as a 128-bit big-endian integer.
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 128 != 112 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u128) * 8).to_be_bytes());
    for block in message.chunks_exact(128) {
        sha512_compress(&mut state, block);
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(8).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn sha512_compress(state: &mut [u64; 8], block: &[u8]) {
    let mut w = [0u64; 80];
    for (i, bytes) in block.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        w[i] = u64::from_be_bytes(word);
    }
    for i in 16..80 {
        let s0 = w[i - 15].rotate_right(1) ^ w[i - 15].rotate_right(8) ^ (w[i - 15] >> 7);
        let s1 = w[i - 2].rotate_right(19) ^ w[i - 2].rotate_right(61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for i in 0..80 {
        let s1 = e.rotate_right(14) ^ e.rotate_right(18) ^ e.rotate_right(41);
        let ch = (e & f) ^ (!e & g);
        let t1 = h
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(SHA512_K[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(28) ^ a.rotate_right(34) ^ a.rotate_right(39);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        (h, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

#[rustfmt::skip]
const SHA512_K: [u64; 80] = [
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
];

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
