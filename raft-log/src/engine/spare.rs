//! Spare preallocation: one zero-filled, synced file kept ready for the writer to roll onto, so
//! a roll never waits for a new file and a sync never pays for a growing one.

use super::*;

#[derive(Default)]
pub(super) struct SpareState {
    /// `spare.tmp` is zero-filled to the segment size and synced.
    pub(super) ready: bool,
    /// Preparing failed; rolls use growing files from then on.
    pub(super) error: Option<String>,
    pub(super) shutdown: bool,
}

/// Keeps one zero-filled, synced file ready for the writer to roll onto.
pub(super) fn preallocator_loop(shared: Arc<Shared>) {
    loop {
        {
            let mut spare = lock(&shared.spare);
            while !spare.shutdown && (spare.ready || spare.error.is_some()) {
                spare = shared.spare_changed.wait(spare).unwrap_or_else(|p| p.into_inner());
            }
            if spare.shutdown {
                return;
            }
        }
        let result = prepare_spare(&*shared.fs, &shared.dir, shared.options.segment_bytes);
        let mut spare = lock(&shared.spare);
        match result {
            Ok(()) => spare.ready = true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot preallocate segments; new segments will grow as they are written");
                spare.error = Some(e.to_string());
            }
        }
    }
}

/// Writes `spare.tmp` in `dir`: `size` zero bytes, synced, its directory entry synced.
pub(super) fn prepare_spare(fs: &dyn FileSystem, dir: &Path, size: u64) -> Result<(), LogError> {
    const ZEROS: usize = 1 << 20;
    let path = join(dir, SPARE_NAME);
    let io = |e| LogError::io(&path, e);
    match fs.remove(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let file = fs.open(&path, true).map_err(io)?;
    let zeros = vec![0u8; ZEROS];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(ZEROS as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(io)?;
        at += n as u64;
    }
    file.sync_data().map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(())
}

/// Makes segment `seq` exist, from the prepared spare or as a new growing file, with its header
/// written and synced before any record can go in: a segment file whose header is not valid was
/// never used (see [`scan_dir`]).
pub(super) fn install_segment(fs: &dyn FileSystem, dir: &Path, seq: u64, use_spare: bool) -> Result<Arc<dyn LogFile>, LogError> {
    let path = join(dir, &segment::segment_name(seq));
    let io = |e| LogError::io(&path, e);
    if use_spare {
        fs.rename(&join(dir, SPARE_NAME), &path).map_err(io)?;
    }
    let file = fs.open(&path, true).map_err(io)?;
    file.write_all_at(&segment::encode_segment_header(seq), 0).map_err(io)?;
    file.sync_data().map_err(io)?;
    fs.sync_dir(dir).map_err(io)?;
    Ok(file)
}
