//! Generated secrets: a CA and certificates (rcgen), operator-mode NKEYs, JWTs and creds (nkeys), password
//! hashes (bcrypt). Pure generation: callers decide where the files go (always mode 0600).

pub mod entropy;
pub mod jwt;
pub mod pki;
