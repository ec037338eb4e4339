//! The consistent-hashing ring that picks the origin shield owning a cache key.
//!
//! Every shield (a [`RingMember`]) is placed on a 64-bit ring as [`VNODES_PER_WEIGHT`] × weight
//! virtual nodes. A key hashes to a point on the same ring; its owner is the member of the first
//! virtual node at or after that point, wrapping past the top. Walking on clockwise and skipping
//! members already met gives the key's fallback order ([`ShieldRing::candidates`]).
//!
//! Because a member's virtual nodes depend only on its id, removing a member moves only the keys
//! it owned (each to the next member in its candidate order), and adding it back restores the
//! previous placement, whatever the order of the caller's list.
//!
//! # Stability
//!
//! Placement must agree between nodes built from different compilers, platforms and releases, so
//! it rests on [`stable_hash`] (a published algorithm implemented here, never `std::hash`) and on
//! an explicit byte layout for virtual nodes: virtual node `i` of member `id` sits at
//! `stable_hash(id ++ "#" ++ decimal(i))`, i.e. the bytes of `format!("{id}#{i}")`, with `i`
//! counting from 0 to `VNODES_PER_WEIGHT * weight - 1`. A key sits at `stable_hash(key)`.
//! The tests pin hashes and the placement of known keys to literal values: changing either moves
//! cached objects between shields fleet-wide, so it must be a deliberate, announced change.

use std::fmt;
use std::iter::FusedIterator;

/// Virtual nodes per unit of weight.
///
/// A member's share of the ring strays from its share of the weight by about `1/sqrt(vnodes)`
/// (3% at 1024), so the busiest of 10 equal shields carries about 5% more than the mean. The
/// requirement is at most 10% more: over 500 random sets of 10 shield ids, 1024 met it for 496,
/// 320 for only 342. Changing this moves keys fleet-wide (see the module's stability notes).
pub const VNODES_PER_WEIGHT: u32 = 1024;

/// The most members a ring holds: [`Candidates`] tracks the members it has listed in a fixed
/// 256-bit set (`[u64; 4]`), which keeps the walk free of allocation.
pub const MAX_MEMBERS: usize = 256;

/// The largest weight a member may have. Bounds the ring's size (at most
/// `MAX_MEMBERS * MAX_WEIGHT * VNODES_PER_WEIGHT` virtual nodes of 16 bytes, about 420 MB; 10
/// shields of weight 1 take 160 KB), so a stray weight in a configuration cannot make `new`
/// allocate without limit.
pub const MAX_WEIGHT: u32 = 100;

/// A shield as the ring knows it: its position in the caller's list and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingMember<'a> {
    /// Stable identity of the shield; the only input to its placement.
    pub id: &'a str,
    /// Relative share of keys, from 1 to [`MAX_WEIGHT`].
    pub weight: u32,
}

/// Why a ring could not be built from a member list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a shield ring needs at least one member")]
    NoMembers,
    #[error("a shield ring holds at most {max} members, got {count}")]
    TooManyMembers { count: usize, max: usize },
    #[error("shield `{id}` (member {index}) has weight 0; weights start at 1")]
    ZeroWeight { index: usize, id: String },
    #[error("shield `{id}` (member {index}) has weight {weight}; the most is {max}")]
    WeightTooLarge {
        index: usize,
        id: String,
        weight: u32,
        max: u32,
    },
    #[error("shield `{id}` is listed twice (members {first} and {second})")]
    DuplicateId {
        id: String,
        first: usize,
        second: usize,
    },
}

/// A built ring: immutable, cheap to share behind an `Arc`.
///
/// Members are referred to by their index in the list given to [`ShieldRing::new`].
#[derive(Clone)]
pub struct ShieldRing {
    /// Virtual-node points, sorted (ties broken by member index, so the order is total). Kept
    /// apart from `owners` so that the binary search touches 8 bytes per step, not 16.
    points: Vec<u64>,
    /// `owners[i]` is the member index of the virtual node at `points[i]`. Every member owns at
    /// least one, which is what lets [`Candidates`] stop once it has listed them all.
    owners: Vec<u16>,
    /// `buckets[b]` is the number of points whose top `bucket_bits` bits are below `b`: a
    /// key's search is narrowed to the few points sharing its top bits, instead of a binary
    /// search over the whole array (about one point per bucket). Placement does not depend on it.
    buckets: Vec<u32>,
    bucket_bits: u32,
    /// Number of members; at least 1, at most [`MAX_MEMBERS`].
    members: usize,
}

impl ShieldRing {
    /// Builds the ring: each member gets `VNODES_PER_WEIGHT * weight` virtual nodes, placed as
    /// the module documentation describes.
    ///
    /// Fails on an empty list, on more than [`MAX_MEMBERS`] members, on a weight outside
    /// `1..=MAX_WEIGHT`, and on an id listed twice.
    pub fn new(members: &[RingMember<'_>]) -> Result<ShieldRing, RingError> {
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        if members.len() > MAX_MEMBERS {
            return Err(RingError::TooManyMembers {
                count: members.len(),
                max: MAX_MEMBERS,
            });
        }
        for (index, member) in members.iter().enumerate() {
            if member.weight == 0 {
                return Err(RingError::ZeroWeight {
                    index,
                    id: member.id.to_owned(),
                });
            }
            if member.weight > MAX_WEIGHT {
                return Err(RingError::WeightTooLarge {
                    index,
                    id: member.id.to_owned(),
                    weight: member.weight,
                    max: MAX_WEIGHT,
                });
            }
            if let Some(first) = members[..index].iter().position(|m| m.id == member.id) {
                return Err(RingError::DuplicateId {
                    id: member.id.to_owned(),
                    first,
                    second: index,
                });
            }
        }

        let total: usize = members
            .iter()
            .map(|m| (m.weight * VNODES_PER_WEIGHT) as usize)
            .sum();
        let mut vnodes = Vec::with_capacity(total);
        for (index, member) in members.iter().enumerate() {
            let index = u16::try_from(index).expect("at most MAX_MEMBERS (256) members");
            for vnode in 0..member.weight * VNODES_PER_WEIGHT {
                vnodes.push((vnode_point(member.id, vnode), index));
            }
        }
        vnodes.sort_unstable();
        let (points, owners): (Vec<u64>, Vec<u16>) = vnodes.into_iter().unzip();
        // About one point per bucket: 2^bits ≥ points, between 2^8 and 2^20 buckets.
        let bucket_bits = (usize::BITS - points.len().leading_zeros()).clamp(8, 20);
        let shift = 64 - bucket_bits;
        let mut buckets = Vec::with_capacity((1 << bucket_bits) + 1);
        let mut at = 0usize;
        for bucket in 0..=(1u64 << bucket_bits) {
            while at < points.len() && (points[at] >> shift) < bucket {
                at += 1;
            }
            buckets.push(u32::try_from(at).expect("a ring holds fewer than 2^32 points"));
        }
        Ok(ShieldRing {
            points,
            owners,
            buckets,
            bucket_bits,
            members: members.len(),
        })
    }

    /// Member indices in ring order for this key, each member exactly once: the owner first, then
    /// the members met walking clockwise from the key's point. Does not allocate.
    pub fn candidates<'r>(&'r self, key: &[u8]) -> Candidates<'r> {
        Candidates {
            owners: &self.owners,
            next: self.first_vnode(key),
            seen: [0; SEEN_WORDS],
            remaining: self.members,
        }
    }

    /// The member owning this key: the first of its [`candidates`](ShieldRing::candidates).
    pub fn owner(&self, key: &[u8]) -> usize {
        usize::from(self.owners[self.first_vnode(key)])
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members
    }

    /// Always false: a ring has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// Index of the first virtual node at or after the key's point, wrapping to 0 past the top.
    fn first_vnode(&self, key: &[u8]) -> usize {
        let point = stable_hash(key);
        // Every point before `lo` has smaller top bits than the key's point, every point from
        // `hi` on larger ones: the answer lies in `lo..=hi`.
        let bucket = (point >> (64 - self.bucket_bits)) as usize;
        let (lo, hi) = (
            self.buckets[bucket] as usize,
            self.buckets[bucket + 1] as usize,
        );
        let at = lo + self.points[lo..hi].partition_point(|&p| p < point);
        if at == self.points.len() {
            0
        } else {
            at
        }
    }
}

impl fmt::Debug for ShieldRing {
    // The virtual nodes are thousands of numbers that say nothing to a reader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShieldRing")
            .field("members", &self.members)
            .field("vnodes", &self.points.len())
            .finish()
    }
}

/// Words in [`Candidates`]' set of listed members: one bit per possible member.
const SEEN_WORDS: usize = MAX_MEMBERS.div_ceil(64);

/// Member indices for one key in ring order, each once; see [`ShieldRing::candidates`].
#[derive(Debug, Clone)]
pub struct Candidates<'r> {
    owners: &'r [u16],
    /// Index of the next virtual node to look at.
    next: usize,
    /// Bit `m % 64` of word `m / 64` is set once member `m` has been listed.
    seen: [u64; SEEN_WORDS],
    /// Members not yet listed. Every member has a virtual node, so the walk finds each of them
    /// within one turn of the ring.
    remaining: usize,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.remaining > 0 {
            let member = self.owners[self.next];
            self.next += 1;
            if self.next == self.owners.len() {
                self.next = 0;
            }
            let word = &mut self.seen[usize::from(member / 64)];
            let bit = 1u64 << (member % 64);
            if *word & bit == 0 {
                *word |= bit;
                self.remaining -= 1;
                return Some(usize::from(member));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Candidates<'_> {}
impl FusedIterator for Candidates<'_> {}

/// A 64-bit hash that is the same on every platform, compiler version and run: FNV-1a 64 over
/// the bytes, then MurmurHash3's `fmix64` finalizer.
///
/// FNV-1a alone mixes the last bytes of its input poorly into the high bits, and virtual node
/// names differ only in their last digits; `fmix64` spreads every input bit over the whole
/// output. Not for use against adversarial inputs: it is unkeyed.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a64(FNV_OFFSET_BASIS, bytes))
}

/// FNV-1a 64 parameters (Fowler, Noll, Vo; draft-eastlake-fnv).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues an FNV-1a 64 hash from `state` over `bytes`; hashing `a` then `b` this way equals
/// hashing `a ++ b`.
fn fnv1a64(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finalizer (Appleby).
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The point of virtual node `vnode` of member `id`: `stable_hash` of the bytes of
/// `format!("{id}#{vnode}")`, computed without building the string.
fn vnode_point(id: &str, vnode: u32) -> u64 {
    let mut digits = [0u8; 10]; // u32::MAX has 10 decimal digits
    let mut start = digits.len();
    let mut rest = vnode;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let state = fnv1a64(FNV_OFFSET_BASIS, id.as_bytes());
    let state = fnv1a64(state, b"#");
    fmix64(fnv1a64(state, &digits[start..]))
}

#[cfg(test)]
mod tests;
