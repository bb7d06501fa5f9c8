//! A file layer that loses what a power cut loses.
//!
//! [`PowerLossFileSystem`] wraps another [`FileSystem`] and keeps every write that has not been
//! made durable in process memory: file bytes until `sync_data`, creations, renames and removals
//! until `sync_dir` of their directory. [`PowerLossFileSystem::crash`] then drops all of it, so
//! the files underneath hold exactly what a machine that lost power would find on its disk.
//! Handles opened before a crash fail every later call, as the dead process's would.
//!
//! Used by the crash tests of this crate, and by the broker's power-loss test mode.
//!
//! With [`PowerLossFileSystem::with_torn_pages`], a power cut also tears the last page a
//! file was written in: of the bytes written there since the last sync, a prefix reaches the
//! disk and the rest is garbage or zeros, as when power fails while a page is being written
//! back. Bytes that were synced are never damaged. The torn page is kept on the real file at
//! all times (and mended by the next sync), so that a SIGKILL of the process, which keeps
//! nothing else that was not synced, leaves it behind too.
//!
//! [`SlowSyncFileSystem`] makes every sync wait an adjustable delay first: a slow disk, for the
//! broker's slow-fsync test mode.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, LogFile};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct PowerLossFileSystem {
    inner: Arc<dyn FileSystem>,
    state: Arc<Mutex<PowerLossState>>,
    /// With torn pages: the source of each tear's cut and garbage.
    tear: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Size of the unit a power cut tears.
pub const TORN_PAGE_BYTES: u64 = 4096;

#[derive(Debug, Default)]
struct PowerLossState {
    open_files: HashMap<PathBuf, Arc<BufferedFile>>,
    /// Every handle given out since the last crash, also of files since removed or replaced.
    handles: Vec<std::sync::Weak<BufferedFile>>,
    /// Files created since their directory was last synced: a crash removes them.
    unsynced_creations: HashSet<PathBuf>,
    /// Renames since the directory was last synced, in order: a crash reverts them.
    unsynced_renames: Vec<(PathBuf, PathBuf)>,
    /// Removals not yet made durable: the file stays underneath (hidden) until `sync_dir`.
    hidden: HashSet<PathBuf>,
    /// Between [`PowerLossFileSystem::crash`] and [`PowerLossFileSystem::power_on`] every
    /// operation fails: no process runs on a machine without power.
    down: bool,
}

#[derive(Debug)]
struct BufferedFile {
    inner: Arc<dyn LogFile>,
    pending: Mutex<PendingWrites>,
    dead: AtomicBool,
    tear: Option<Arc<std::sync::atomic::AtomicU64>>,
}

#[derive(Debug)]
struct PendingWrites {
    /// Writes since the last `sync_data`, in the order they were made.
    writes: Vec<(u64, Vec<u8>)>,
    len: u64,
    /// The torn page now on the real file: the runs it overwrote and what they held before,
    /// to put back when the page moves on.
    torn: Vec<(u64, Vec<u8>)>,
}

/// splitmix64: a cheap, well-mixed step for the tear's choices.
fn next_random(state: &std::sync::atomic::AtomicU64) -> u64 {
    let mut z = state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn lost_power() -> io::Error {
    io::Error::other("power lost: this handle belongs to a crashed process")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BufferedFile {
    /// The pending writes, if the process that holds this handle is still alive. Checked under
    /// the lock that `crash` also takes, so no operation straddles a crash.
    fn pending(&self) -> io::Result<MutexGuard<'_, PendingWrites>> {
        let pending = lock(&self.pending);
        if self.dead.load(Ordering::Acquire) { Err(lost_power()) } else { Ok(pending) }
    }
}

impl BufferedFile {
    /// Puts back what the torn page overwrote on the real file.
    fn mend(&self, pending: &mut PendingWrites) -> io::Result<()> {
        for (offset, original) in std::mem::take(&mut pending.torn) {
            self.inner.write_all_at(&original, offset)?;
        }
        Ok(())
    }

    /// Writes on the real file what a power cut now would leave of the page that `pending`'s
    /// newest write ended in: of its bytes written since the last sync, a random prefix as
    /// written, the rest garbage or zeros. The page's other bytes are not touched.
    fn tear(&self, pending: &mut PendingWrites, random: &std::sync::atomic::AtomicU64) -> io::Result<()> {
        self.mend(pending)?;
        let Some((offset, data)) = pending.writes.last().filter(|(_, d)| !d.is_empty()) else { return Ok(()) };
        let page = (offset + data.len() as u64 - 1) / TORN_PAGE_BYTES * TORN_PAGE_BYTES;
        let page_end = page + TORN_PAGE_BYTES;
        // The page as the process sees it, and which of its bytes are not yet synced.
        let mut content = vec![0u8; TORN_PAGE_BYTES as usize];
        let mut unsynced = vec![false; TORN_PAGE_BYTES as usize];
        // The writes that reach into the page, newest back to the first that does not: appends
        // end there. (Bytes of an older write into the page are then simply lost, which a
        // power cut may also do.) Applied oldest first, so the newest bytes win.
        let reaching = pending.writes.iter().rev().take_while(|(at, d)| *at < page_end && at + d.len() as u64 > page).count();
        for (at, data) in &pending.writes[pending.writes.len() - reaching..] {
            let (from, to) = ((*at).max(page), (at + data.len() as u64).min(page_end));
            if from < to {
                content[(from - page) as usize..(to - page) as usize].copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
                unsynced[(from - page) as usize..(to - page) as usize].fill(true);
            }
        }
        let (Some(first), Some(last)) = (unsynced.iter().position(|u| *u), unsynced.iter().rposition(|u| *u)) else { return Ok(()) };
        let roll = next_random(random);
        let cut = first + (roll % (last - first + 2) as u64) as usize;
        let garbage = roll & (1 << 40) != 0;
        let inner_len = self.inner.len()?;
        let mut i = first;
        while i <= last {
            if !unsynced[i] {
                i += 1;
                continue;
            }
            let run_end = i + unsynced[i..].iter().position(|u| !*u).unwrap_or(TORN_PAGE_BYTES as usize - i);
            let at = page + i as u64;
            // What the real file holds there now: its bytes, zeros past its end.
            let mut original = vec![0u8; run_end - i];
            if at < inner_len {
                let n = (inner_len - at).min(original.len() as u64) as usize;
                self.inner.read_exact_at(&mut original[..n], at)?;
            }
            let mut torn = content[i..run_end].to_vec();
            for (k, b) in torn.iter_mut().enumerate() {
                if i + k >= cut {
                    *b = if garbage { next_random(random) as u8 } else { 0 };
                }
            }
            self.inner.write_all_at(&torn, at)?;
            pending.torn.push((at, original));
            i = run_end;
        }
        Ok(())
    }
}

impl LogFile for BufferedFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut pending = self.pending()?;
        pending.len = pending.len.max(offset + buf.len() as u64);
        pending.writes.push((offset, buf.to_vec()));
        if let Some(random) = &self.tear {
            self.tear(&mut pending, random)?;
        }
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let pending = self.pending()?;
        let end = offset + buf.len() as u64;
        if end > pending.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"));
        }
        let inner_len = self.inner.len()?;
        buf.fill(0);
        if offset < inner_len {
            let n = (inner_len.min(end) - offset) as usize;
            self.inner.read_exact_at(&mut buf[..n], offset)?;
        }
        for (write_offset, data) in &pending.writes {
            let write_end = write_offset + data.len() as u64;
            let from = offset.max(*write_offset);
            let to = end.min(write_end);
            if from < to {
                let dst = (from - offset) as usize..(to - offset) as usize;
                let src = (from - write_offset) as usize..(to - write_offset) as usize;
                buf[dst].copy_from_slice(&data[src]);
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut pending = self.pending()?;
        for (offset, data) in &pending.writes {
            self.inner.write_all_at(data, *offset)?;
        }
        self.inner.sync_data()?;
        pending.writes.clear();
        // The writes just made durable covered every byte of the torn page.
        pending.torn.clear();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.pending()?.len)
    }
}

impl PowerLossFileSystem {
    /// Wraps `inner`; nothing is lost until [`Self::crash`].
    pub fn new(inner: Arc<dyn FileSystem>) -> Self {
        Self { inner, state: Arc::new(Mutex::new(PowerLossState::default())), tear: None }
    }

    /// [`Self::new`], and a power cut also tears the last page written of each file (see the
    /// module documentation); `seed` chooses each tear's cut and garbage.
    pub fn with_torn_pages(inner: Arc<dyn FileSystem>, seed: u64) -> Self {
        Self { tear: Some(Arc::new(std::sync::atomic::AtomicU64::new(seed))), ..Self::new(inner) }
    }

    /// Turns the power back on after a crash: the files hold what was durable.
    pub fn power_on(&self) {
        lock(&self.state).down = false;
    }

    fn powered(&self) -> io::Result<MutexGuard<'_, PowerLossState>> {
        let state = lock(&self.state);
        if state.down { Err(lost_power()) } else { Ok(state) }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.inner.list(parent(path))?.iter().any(|n| Path::new(n) == file_name(path)))
    }

    /// Loses power: drops every write not yet made durable and kills every open handle. Every
    /// operation fails until [`Self::power_on`], so the threads of the crashed process can be
    /// stopped without touching the disk.
    pub fn crash(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.down = true;
        for file in state.handles.drain(..).filter_map(|w| w.upgrade()) {
            let mut pending = lock(&file.pending);
            file.dead.store(true, Ordering::Release);
            pending.writes.clear();
            // The torn page stays on the disk: that is the tear.
            pending.torn.clear();
        }
        state.open_files.clear();
        for (from, to) in std::mem::take(&mut state.unsynced_renames).into_iter().rev() {
            self.inner.rename(&to, &from)?;
        }
        for path in std::mem::take(&mut state.unsynced_creations) {
            match self.inner.remove(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        state.hidden.clear();
        Ok(())
    }
}

impl FileSystem for PowerLossFileSystem {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let mut state = self.powered()?;
        if let Some(file) = state.open_files.get(path) {
            return Ok(file.clone());
        }
        if state.hidden.contains(path) {
            if !create {
                return Err(io::Error::new(io::ErrorKind::NotFound, "file removed"));
            }
            // Re-creating a removed file: the old bytes must not reappear under the new file.
            self.inner.remove(path)?;
            state.hidden.remove(path);
        }
        let existed = self.exists(path)?;
        let inner = self.inner.open(path, create)?;
        let len = if existed { inner.len()? } else { 0 };
        if !existed {
            state.unsynced_creations.insert(path.to_path_buf());
        }
        let file = Arc::new(BufferedFile {
            inner,
            pending: Mutex::new(PendingWrites { writes: Vec::new(), len, torn: Vec::new() }),
            dead: AtomicBool::new(false),
            tear: self.tear.clone(),
        });
        state.open_files.insert(path.to_path_buf(), file.clone());
        state.handles.retain(|w| w.strong_count() > 0);
        state.handles.push(Arc::downgrade(&file));
        Ok(file)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.powered()?;
        self.inner.rename(from, to)?;
        if let Some(file) = state.open_files.remove(from) {
            state.open_files.insert(to.to_path_buf(), file);
        }
        if state.unsynced_creations.remove(from) {
            state.unsynced_creations.insert(to.to_path_buf());
        } else {
            state.unsynced_renames.push((from.to_path_buf(), to.to_path_buf()));
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.powered()?;
        if state.hidden.contains(path) || !self.exists(path)? {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        }
        state.open_files.remove(path);
        if state.unsynced_creations.remove(path) {
            return self.inner.remove(path);
        }
        state.hidden.insert(path.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.powered()?;
        let names = self.inner.list(dir)?;
        Ok(names.into_iter().filter(|n| !state.hidden.contains(&dir.join(n))).collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        drop(self.powered()?);
        self.inner.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.powered()?;
        let hidden: Vec<PathBuf> = state.hidden.iter().filter(|p| parent(p) == dir).cloned().collect();
        for path in hidden {
            self.inner.remove(&path)?;
            state.hidden.remove(&path);
        }
        self.inner.sync_dir(dir)?;
        state.unsynced_creations.retain(|p| parent(p) != dir);
        state.unsynced_renames.retain(|(_, to)| parent(to) != dir);
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

fn file_name(path: &Path) -> &Path {
    path.file_name().map(Path::new).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFileSystem;

    fn setup() -> (tempfile::TempDir, PowerLossFileSystem) {
        let dir = tempfile::tempdir().expect("tempdir");
        (dir, PowerLossFileSystem::new(Arc::new(StdFileSystem)))
    }

    #[test]
    fn crash_keeps_synced_bytes_and_drops_the_rest() {
        let (dir, fs) = setup();
        let path = dir.path().join("f");
        let file = fs.open(&path, true).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        file.write_all_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(b"XX", 2).unwrap();
        file.write_all_at(b"lost", 7).unwrap();
        let mut buf = [0u8; 11];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"duXXblelost");
        fs.crash().unwrap();
        assert!(file.write_all_at(b"z", 0).is_err(), "a crashed handle must not write");
        assert!(fs.open(&path, false).is_err(), "nothing runs while the power is off");
        fs.power_on();
        let file = fs.open(&path, false).unwrap();
        assert_eq!(file.len().unwrap(), 7);
        let mut buf = [0u8; 7];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"durable");
    }

    /// What a reopened file holds after a torn power cut.
    fn read_back(fs: &PowerLossFileSystem, path: &Path) -> Vec<u8> {
        let file = fs.open(path, false).unwrap();
        let mut buf = vec![0u8; file.len().unwrap() as usize];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    #[test]
    fn a_torn_power_cut_keeps_synced_bytes_and_a_prefix_of_the_last_page() {
        let mut tears = 0;
        for seed in 0..64 {
            let dir = tempfile::tempdir().unwrap();
            let fs = PowerLossFileSystem::with_torn_pages(Arc::new(StdFileSystem), seed);
            let path = dir.path().join("f");
            let file = fs.open(&path, true).unwrap();
            fs.sync_dir(dir.path()).unwrap();
            // 5000 synced bytes, then 10,000 unsynced ones ending in the page at 12288.
            file.write_all_at(&[b'D'; 5000], 0).unwrap();
            file.sync_data().unwrap();
            let unsynced: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
            for (k, chunk) in unsynced.chunks(1000).enumerate() {
                file.write_all_at(chunk, 5000 + 1000 * k as u64).unwrap();
            }
            // The process sees what it wrote, whatever the disk holds.
            let mut seen = vec![0u8; 15_000];
            file.read_exact_at(&mut seen, 0).unwrap();
            assert_eq!(&seen[5000..], &unsynced[..]);
            fs.crash().unwrap();
            fs.power_on();
            let after = read_back(&fs, &path);
            assert_eq!(&after[..5000], &[b'D'; 5000][..], "seed {seed}: synced bytes damaged");
            // Every unsynced page but the last is lost: the disk never saw them.
            let last_page = 12_288usize;
            assert!(after[5000..last_page.min(after.len())].iter().all(|b| *b == 0), "seed {seed}: an earlier unsynced page survived");
            // The last page: a prefix as written, then nothing of what was written.
            let tail = &after[last_page..];
            let written = &unsynced[last_page - 5000..];
            assert!(tail.len() <= written.len(), "seed {seed}");
            let kept = tail.iter().zip(written).take_while(|(a, b)| a == b).count();
            if kept < written.len() {
                tears += 1;
            }
        }
        assert!(tears > 32, "only {tears} of 64 power cuts tore the last page");
    }

    #[test]
    fn a_sync_mends_the_torn_page() {
        let dir = tempfile::tempdir().unwrap();
        let fs = PowerLossFileSystem::with_torn_pages(Arc::new(StdFileSystem), 7);
        let path = dir.path().join("f");
        let file = fs.open(&path, true).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        file.write_all_at(&[b'x'; 6000], 0).unwrap();
        file.write_all_at(&[b'y'; 100], 6000).unwrap();
        file.sync_data().unwrap();
        fs.crash().unwrap();
        fs.power_on();
        let after = read_back(&fs, &path);
        assert_eq!(after.len(), 6100);
        assert!(after[..6000].iter().all(|b| *b == b'x') && after[6000..].iter().all(|b| *b == b'y'));
    }

    #[test]
    fn crash_undoes_unsynced_creations_renames_and_removals() {
        let (dir, fs) = setup();
        let kept = dir.path().join("kept");
        let f = fs.open(&kept, true).unwrap();
        f.write_all_at(b"k", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(dir.path()).unwrap();
        fs.open(&dir.path().join("new"), true).unwrap();
        fs.rename(&kept, &dir.path().join("renamed")).unwrap();
        fs.remove(&dir.path().join("renamed")).unwrap();
        assert_eq!(fs.list(dir.path()).unwrap(), vec!["new".to_string()]);
        fs.crash().unwrap();
        fs.power_on();
        assert_eq!(fs.list(dir.path()).unwrap(), vec!["kept".to_string()]);
    }
}

/// A file layer whose `sync_data` (and `sync_dir`) first waits for an adjustable delay: a slow
/// disk, for fault tests. The delay is shared, so a test (or a broker's test mode) can change it
/// while the log runs.
#[derive(Debug, Clone)]
pub struct SlowSyncFileSystem {
    inner: Arc<dyn FileSystem>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
struct SlowSyncFile {
    inner: Arc<dyn LogFile>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

/// The delay value that makes every sync fail instead of waiting: a disk that died.
pub const FAIL_SYNCS: u64 = u64::MAX;
/// The delay value that holds every sync until the value changes: a test decides exactly when
/// the disk catches up.
pub const HOLD_SYNCS: u64 = u64::MAX - 1;

fn wait(delay_ms: &std::sync::atomic::AtomicU64) -> io::Result<()> {
    loop {
        return match delay_ms.load(Ordering::Relaxed) {
            0 => Ok(()),
            FAIL_SYNCS => Err(io::Error::other("test mode: injected fdatasync failure")),
            HOLD_SYNCS => {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            ms => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            }
        };
    }
}

impl SlowSyncFileSystem {
    /// Wraps `inner` with no delay yet.
    pub fn new(inner: Arc<dyn FileSystem>) -> Self {
        Self { inner, delay_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)) }
    }

    /// The delay every sync waits for, in milliseconds; store to change it ([`FAIL_SYNCS`]:
    /// every sync fails; [`HOLD_SYNCS`]: every sync waits until the value changes).
    pub fn delay_ms(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.delay_ms.clone()
    }
}

impl LogFile for SlowSyncFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        wait(&self.delay_ms)?;
        self.inner.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl FileSystem for SlowSyncFileSystem {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(SlowSyncFile { inner: self.inner.open(path, create)?, delay_ms: self.delay_ms.clone() }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(SlowSyncFile { inner: self.inner.open_read_only(path)?, delay_ms: self.delay_ms.clone() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        wait(&self.delay_ms)?;
        self.inner.sync_dir(dir)
    }
}
