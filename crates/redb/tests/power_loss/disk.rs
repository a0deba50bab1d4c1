//! A simulated disk for redb: a [`redb::StorageBackend`] that records every
//! write, length change and sync, and the power losses built from that
//! record.
//!
//! [`SimDisk`] is what the process sees: one image that every `write` and
//! `set_len` changes at once (the page cache), plus the log of every
//! operation in order. Open a store on it with
//! `RedbStore::open_with_backend(disk.clone(), ..)`, keep the clone to read
//! [`SimDisk::ops`] after each acknowledged call, and take
//! [`SimDisk::log`] when the workload is done.
//!
//! [`sync_points`] replays that log: at each `sync_data` it has the image
//! the disk held durably before it (everything up to the previous sync) and
//! the writes and length changes issued since, not yet synced. A power cut
//! just before that sync completes leaves the durable image plus, per
//! [`Loss`], none of the pending operations, a random prefix, a random
//! subset, or all of them with the last write torn. [`image_after`] is the
//! image a killed process leaves: every operation before the kill, synced
//! or not (the kernel still has them).
//!
//! Length changes are pending like writes: a cut that drops a `set_len`
//! keeps the durable length, and a kept write past the end extends the
//! image with zeros, as a file does. Randomness comes from [`Rng`], seeded,
//! so every run cuts the same way.

use std::{
    fmt,
    io::{Error, ErrorKind},
    sync::{Arc, Mutex},
};

use redb::StorageBackend;
pub use runstore_conformance::support::rng::Rng;

/// The unit a torn write is cut at: a disk sector.
pub const SECTOR: usize = 512;

/// One operation the store issued to the disk.
#[derive(Clone)]
pub enum Op {
    /// `write(offset, data)`.
    Write { offset: u64, data: Arc<[u8]> },
    /// `set_len(len)`.
    SetLen(u64),
    /// `sync_data()`.
    Sync,
}

#[derive(Default)]
struct State {
    image: Vec<u8>,
    /// What the disk held durably when the log began.
    base: Vec<u8>,
    log: Vec<Op>,
}

/// The backend: what the process sees, and the log of how it got there.
/// Clones share one disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimDisk")
            .field("len", &state.image.len())
            .field("ops", &state.log.len())
            .finish()
    }
}

impl SimDisk {
    /// A disk holding `image`, with an empty log.
    pub fn with_image(image: Vec<u8>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                base: image.clone(),
                image,
                log: Vec::new(),
            })),
        }
    }

    /// The disk a process killed before a sync leaves to the next one:
    /// `durable` on the disk, and `pending`, the operations issued since
    /// that sync, still in the page cache. The process sees `durable` with
    /// `pending` applied; the log starts with `pending`, unsynced, so a
    /// later power cut (see [`sync_points_from`] with [`SimDisk::base`])
    /// may drop them.
    pub fn after_kill(durable: &[u8], pending: &[Op]) -> Self {
        let mut image = durable.to_vec();
        for op in pending {
            apply(&mut image, op);
        }
        Self {
            state: Arc::new(Mutex::new(State {
                image,
                base: durable.to_vec(),
                log: pending.to_vec(),
            })),
        }
    }

    /// What the disk held durably when its log began.
    pub fn base(&self) -> Vec<u8> {
        self.lock().base.clone()
    }

    /// How many operations the disk has seen so far.
    pub fn ops(&self) -> usize {
        self.lock().log.len()
    }

    /// Every operation so far, in order.
    pub fn log(&self) -> Vec<Op> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the disk's lock is not poisoned")
    }
}

fn index(value: u64) -> std::io::Result<usize> {
    usize::try_from(value).map_err(|_| Error::new(ErrorKind::InvalidInput, "offset too large"))
}

/// Writes `data` at `offset` into `image`, extending it with zeros first
/// when the write ends past its end.
fn write_at(image: &mut Vec<u8>, offset: usize, data: &[u8]) {
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

impl StorageBackend for SimDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.lock().image.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let state = self.lock();
        let start = index(offset)?;
        let source = state
            .image
            .get(start..start + out.len())
            .ok_or_else(|| Error::new(ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        let new_len = index(len)?;
        state.image.resize(new_len, 0);
        state.log.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.lock().log.push(Op::Sync);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        write_at(&mut state.image, index(offset)?, data);
        state.log.push(Op::Write {
            offset,
            data: Arc::from(data),
        });
        Ok(())
    }
}

/// Applies `op` to `image` (a sync changes nothing).
fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let offset = usize::try_from(*offset).expect("offsets fit in memory");
            write_at(image, offset, data);
        }
        Op::SetLen(len) => image.resize(usize::try_from(*len).expect("lengths fit"), 0),
        Op::Sync => {}
    }
}

/// The image a process killed after `ops` operations leaves: all of them,
/// synced or not.
pub fn image_after(log: &[Op], ops: usize) -> Vec<u8> {
    let mut image = Vec::new();
    for op in &log[..ops] {
        apply(&mut image, op);
    }
    image
}

/// What a power cut keeps of the operations issued since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// None of them.
    DropAll,
    /// A random prefix (possibly empty or all).
    Prefix,
    /// A random subset, each kept with probability 1/2, in issue order.
    Subset,
    /// All of them, but the last write only up to a random sector boundary
    /// inside it (a write of one sector is lost whole).
    TornLast,
}

impl Loss {
    /// Every variant.
    pub const ALL: [Self; 4] = [Self::DropAll, Self::Prefix, Self::Subset, Self::TornLast];
}

/// One sync of the log: the durable image before it and what was pending.
pub struct SyncPoint<'a> {
    /// The index of the `Sync` in the log; every call acknowledged with at
    /// most this many operations issued was synced by an earlier sync.
    pub at: usize,
    /// The image after the previous sync.
    pub durable: &'a [u8],
    /// The operations since the previous sync.
    pub pending: &'a [Op],
}

impl SyncPoint<'_> {
    /// The image a power cut just before this sync completes leaves.
    pub fn power_loss(&self, loss: Loss, rng: &mut Rng) -> Vec<u8> {
        let mut image = self.durable.to_vec();
        match loss {
            Loss::DropAll => {}
            Loss::Prefix => {
                let kept = rng.index(self.pending.len() + 1);
                for op in &self.pending[..kept] {
                    apply(&mut image, op);
                }
            }
            Loss::Subset => {
                for op in self.pending {
                    if rng.index(2) == 1 {
                        apply(&mut image, op);
                    }
                }
            }
            Loss::TornLast => {
                let last_write = self
                    .pending
                    .iter()
                    .rposition(|op| matches!(op, Op::Write { .. }));
                for (at, op) in self.pending.iter().enumerate() {
                    match op {
                        Op::Write { offset, data } if Some(at) == last_write => {
                            let sectors = data.len() / SECTOR;
                            let kept = if sectors > 1 {
                                SECTOR * (1 + rng.index(sectors - 1))
                            } else {
                                0
                            };
                            let offset = usize::try_from(*offset).expect("offsets fit");
                            write_at(&mut image, offset, &data[..kept]);
                        }
                        op => apply(&mut image, op),
                    }
                }
            }
        }
        image
    }
}

/// Calls `visit` at every sync of `log`, in order.
pub fn sync_points(log: &[Op], visit: impl FnMut(SyncPoint<'_>)) {
    sync_points_from(&[], log, visit);
}

/// Calls `visit` at every sync of `log`, in order, on a disk that held
/// `base` durably when the log began.
pub fn sync_points_from(base: &[u8], log: &[Op], mut visit: impl FnMut(SyncPoint<'_>)) {
    let mut durable = base.to_vec();
    let mut since = 0;
    for (at, op) in log.iter().enumerate() {
        if matches!(op, Op::Sync) {
            visit(SyncPoint {
                at,
                durable: &durable,
                pending: &log[since..at],
            });
            for op in &log[since..at] {
                apply(&mut durable, op);
            }
            since = at + 1;
        }
    }
}
