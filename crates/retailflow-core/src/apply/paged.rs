//! A growable array stored in fixed-size pages.
//!
//! The ledger's per-position arrays hold millions of elements. A `Vec` grows by doubling, so
//! just past a power of two it holds nearly as much unused capacity as data (for 64-byte cells
//! at 2.2 M positions, 128 MB of nothing), and each doubling copies everything while the old
//! and the new buffer are both alive. Pages never move: growth allocates one page, and at most
//! the last page is partly empty. An index costs one more load, from a page table small enough
//! to stay in cache (a thousand pointers for 4 M elements).
//!
//! It serializes as a plain sequence, exactly as a `Vec<T>` does, so the snapshot format does
//! not change with it.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// Elements per page, as a power of two.
const PAGE_BITS: u32 = 12;
const PAGE: usize = 1 << PAGE_BITS;
const MASK: usize = PAGE - 1;

#[derive(Clone, Debug)]
pub struct Paged<T> {
    /// Every page but the last holds exactly `PAGE` elements; the last grows like a `Vec`
    /// up to `PAGE`, so a small array costs what a small `Vec` does.
    pages: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Paged {
            pages: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Paged<T> {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn push(&mut self, value: T) {
        match self.pages.last_mut() {
            Some(p) if p.len() < PAGE => p.push(value),
            _ => {
                // A full page before it: start the next one at its final size, so it never
                // reallocates. The first page grows like a `Vec`.
                let mut p = if self.pages.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(PAGE)
                };
                p.push(value);
                self.pages.push(p);
            }
        }
        self.len += 1;
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.pages.get(i >> PAGE_BITS)?.get(i & MASK)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.pages.iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pages.iter_mut().flatten()
    }

    /// Heap bytes held: every page's capacity and the page table.
    pub fn heap_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Vec<T>>()
            + self
                .pages
                .iter()
                .map(|p| p.capacity() * std::mem::size_of::<T>())
                .sum::<usize>()
    }
}

impl<T: Clone> Paged<T> {
    /// Appends copies of `value` until the array holds `len` elements.
    pub fn extend_to(&mut self, len: usize, value: T) {
        while self.len < len {
            self.push(value.clone());
        }
    }
}

impl<T> Index<usize> for Paged<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.pages[i >> PAGE_BITS][i & MASK]
    }
}

impl<T> IndexMut<usize> for Paged<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.pages[i >> PAGE_BITS][i & MASK]
    }
}

impl<T: Serialize> Serialize for Paged<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The length up front: `collect_seq` over the pages' flattened iterator announces no
        // exact length, and MessagePack then encodes the whole array into a buffer of its own
        // to count it first (for 5 M positions, the snapshot part twice over, grown by doubling).
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        for v in self.iter() {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Paged<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
            type Value = Paged<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }

            // No capacity is taken from the length the input announces: pages are allocated
            // as elements actually arrive.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Paged<T>, A::Error> {
                let mut out = Paged::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_pushes_and_serializes_like_a_vec() {
        let mut p: Paged<u64> = Paged::new();
        let mut v: Vec<u64> = Vec::new();
        for i in 0..(3 * PAGE as u64 + 17) {
            p.push(i * 7);
            v.push(i * 7);
        }
        assert_eq!(p.len(), v.len());
        for (i, want) in v.iter().enumerate() {
            assert_eq!(p[i], *want);
            assert_eq!(p.get(i), Some(want));
        }
        assert_eq!(p.get(v.len()), None);
        p[PAGE + 3] = 1;
        v[PAGE + 3] = 1;
        assert!(p.iter().eq(v.iter()));
        // The same bytes as a Vec, both ways.
        let bytes = rmp_serde::to_vec(&p).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&v).unwrap());
        let back: Paged<u64> = rmp_serde::from_slice(&bytes).unwrap();
        assert!(back.iter().eq(v.iter()));
        // Full pages hold exactly a page; only the last one has room left.
        assert!(p.heap_bytes() <= (v.len() + PAGE) * 8 + p.pages.capacity() * 24);
        let mut q: Paged<u32> = Paged::new();
        q.extend_to(5, 9);
        assert!(q.iter().eq([9u32; 5].iter()));
    }

    #[test]
    fn a_length_prefix_alone_allocates_nothing() {
        // A MessagePack array header announcing 2^32-1 elements and then none.
        let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(rmp_serde::from_slice::<Paged<u64>>(&bytes).is_err());
    }

    /// The encoder writes elements as they come: it is told the length up front, so it does
    /// not encode the whole array into a buffer of its own first (which shows as one write of
    /// the whole body).
    #[test]
    fn serializes_without_a_second_buffer() {
        struct Largest(usize);
        impl std::io::Write for Largest {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 = self.0.max(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut p: Paged<u64> = Paged::new();
        for i in 0..(2 * PAGE as u64 + 5) {
            p.push(i);
        }
        let mut w = Largest(0);
        rmp_serde::encode::write(&mut w, &p).unwrap();
        assert!(w.0 <= 16, "largest single write {} bytes", w.0);
    }
}
