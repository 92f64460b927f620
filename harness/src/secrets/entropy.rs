//! Where every generated secret's randomness comes from. Random by default; seeded for renders that must be
//! reproducible (the NixOS test fixtures are committed and compared with a fresh render, and a lab VM
//! re-derives the credentials of the configs it tests from the same seed).

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

pub struct Entropy {
    rng: ChaCha20Rng,
    seeded: bool,
}

impl Entropy {
    pub fn random() -> Entropy {
        Entropy { rng: ChaCha20Rng::from_entropy(), seeded: false }
    }

    /// The same seed always yields the same secrets, in the same order of requests.
    pub fn seeded(seed: &str) -> Entropy {
        let digest: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
        Entropy { rng: ChaCha20Rng::from_seed(digest), seeded: true }
    }

    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.rng.fill_bytes(&mut b);
        b
    }

    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        b
    }

    /// Alphanumeric, so it can stand in a leaf remote URL without escaping.
    pub fn password(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len).map(|_| ALPHABET[(self.rng.next_u32() % ALPHABET.len() as u32) as usize] as char).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_repeat_and_differ() {
        assert_eq!(Entropy::seeded("a").password(20), Entropy::seeded("a").password(20));
        assert_ne!(Entropy::seeded("a").password(20), Entropy::seeded("b").password(20));
        assert_ne!(Entropy::random().bytes32(), Entropy::random().bytes32());
    }
}
