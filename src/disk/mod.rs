//! The disk format and the OS calls under it; nothing here knows about policy.
//!
//! | file | what |
//! |---|---|
//! | `layout.rs` | where things live in a cache directory; entry file names |
//! | `entry.rs` | the entry file format: header, key, payload, checksum |
//! | `counter.rs` | the shared live-entry counter page (`fscache.state`) |
//! | `lock.rs` | the lock protocol: stripe locks, the sweep lock, fork, re-entry |
//! | `sys.rs` | the syscalls: `openat` beneath the root, renames, directory streams |
//! | `fork.rs` | a fork generation, so a child reseeds what it must not share |
//!
//! Modules here import only each other (in that order, bottom up: `entry`, `sys`,
//! `layout`, `counter`, `lock`) and the crate's leaf modules (`error`, `hooks`).

pub(crate) mod counter;
pub(crate) mod entry;
pub(crate) mod fork;
pub(crate) mod layout;
pub(crate) mod lock;
pub(crate) mod sys;
