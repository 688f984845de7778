//! The store layer's vocabulary for a read-merge-write, shared by the file cache
//! and every [`Store`](crate::Store): a leaf, so neither defines it for the other.

/// What a read-merge-write does with the stored value: see
/// [`FileSystemCache::update_bytes`](crate::FileSystemCache::update_bytes) and [`Store::update`](crate::Store::update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Write nothing; the stored value (or its absence) stays.
    Keep,
    /// Store these bytes.
    Put(Vec<u8>),
    /// Remove the stored value.
    Delete,
}
