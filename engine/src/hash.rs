//! `context_hash`: SHA-256 over a canonical encoding of the context.
//!
//! The encoding, version 1, is the ASCII tag `converge-context-v1`, a zero byte, the number of facts as a
//! big-endian `u64`, then each fact in `(key, id)` byte order as
//!
//! ```text
//! u32be len(key) key | u32be len(id) id | u64be len(content) content | u32be len(agent) agent | u32be cycle
//! ```
//!
//! Every field is length-prefixed, so no choice of strings can make two contexts encode alike; provenance is
//! part of the hash, because the same facts written by other agents or cycles are a different history.
//! Changing this encoding changes every hash: bump the tag.

use crate::context::Context;
use sha2::{Digest, Sha256};

const TAG: &[u8] = b"converge-context-v1\0";

pub(crate) fn context_hash(context: &Context) -> String {
    let mut h = Sha256::new();
    h.update(TAG);
    h.update((context.len() as u64).to_be_bytes());
    for f in context.iter() {
        field32(&mut h, f.key.as_bytes());
        field32(&mut h, f.id.as_bytes());
        h.update((f.content.len() as u64).to_be_bytes());
        h.update(f.content.as_bytes());
        field32(&mut h, f.agent.as_bytes());
        h.update(f.cycle.to_be_bytes());
    }
    hex(&h.finalize())
}

fn field32(h: &mut Sha256, bytes: &[u8]) {
    // Keys, ids and names are bounded far below 4 GiB by validation; saturate rather than wrap regardless.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn empty_context_hash_is_fixed() {
        // Pinned: changing the encoding must change the tag and this value.
        assert_eq!(context_hash(&Context::default()), hex(&Sha256::digest([TAG, &0u64.to_be_bytes()].concat())));
    }

    #[test]
    fn fields_do_not_run_together() {
        let agent: Arc<str> = Arc::from("a");
        let mut one = Context::default();
        one.insert("ab", "c", String::new(), &agent, 1);
        let mut two = Context::default();
        two.insert("a", "bc", String::new(), &agent, 1);
        assert_ne!(context_hash(&one), context_hash(&two));
    }
}
