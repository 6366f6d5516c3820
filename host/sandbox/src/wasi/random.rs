//! The guest's randomness: xoshiro256** seeded from the call's seed, one stream for `random`, one for
//! `insecure-random`, so two runs of the same job draw the same numbers.

use rand_core::TryRng;
use sha2::{Digest, Sha256};
use std::convert::Infallible;

pub(super) struct SeededRng([u64; 4]);

impl SeededRng {
    pub(super) fn new(seed: &[u8; 32], stream: u8) -> Self {
        let mut h = Sha256::new();
        h.update(seed);
        h.update([stream]);
        let bytes: [u8; 32] = h.finalize().into();
        let mut s = [0u64; 4];
        for (word, chunk) in s.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self(s)
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// The first half of a seed, for the `insecure-seed` interface.
pub(super) fn half(seed: &[u8; 32]) -> [u8; 16] {
    let mut half = [0; 16];
    half.copy_from_slice(&seed[..16]);
    half
}
