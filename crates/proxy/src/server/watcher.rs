//! The configuration thread: it owns the [`Control`] and applies what changes, as it comes:
//! the dynamic resource files, and the responses of the streams to control planes.
//!
//! Envoy reloads a `path_config_source` file when a new one is moved into place (or, with
//! `watched_directory`, when something is moved into that directory); wasmproxy watches the
//! same directories with inotify and reloads on a move, and also on a file written in place
//! once its writer closes it (Envoy misses those). A reload applies only the files whose
//! text changed.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;
use wasmproxy_config::model::FileSource;

use crate::server::ServerError;
use crate::server::control::Control;

/// How often the thread looks whether the server is stopping.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Events that come together (a move is two or three) are taken as one reload.
const SETTLE: Duration = Duration::from_millis(5);

/// What the configuration thread is told.
pub enum ControlEvent {
    /// A watched file may have changed.
    Files,
    /// A stream to a control plane has news.
    Xds(crate::xds::Event),
}

/// Starts the configuration thread, which serves `events` (the sender's clones go to the
/// file watcher and the xDS streams) until `shutdown`. The files an update brings (a new
/// RDS or EDS file) are watched from then on.
pub fn spawn(
    mut control: Control,
    shutdown: watch::Receiver<bool>,
    sender: Sender<ControlEvent>,
    events: Receiver<ControlEvent>,
) -> Result<std::thread::JoinHandle<()>, ServerError> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && reloads(&event.kind)
        {
            let _ = sender.send(ControlEvent::Files);
        }
    })
    .map_err(|e| ServerError::Config(format!("cannot watch the dynamic resource files: {e}")))?;
    let mut watched = Vec::new();
    watch_new(&mut watcher, &mut watched, &control.sources())?;
    std::thread::Builder::new()
        .name("wasmproxy-config".into())
        .spawn(move || {
            while !*shutdown.borrow() {
                let wait = match control.next_deadline() {
                    Some(deadline) => deadline.saturating_duration_since(Instant::now()).min(SHUTDOWN_POLL),
                    None => SHUTDOWN_POLL,
                };
                let first = match events.recv_timeout(wait) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => {
                        control.tick();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let mut files = false;
                let mut xds = Vec::new();
                sort(first, &mut files, &mut xds);
                if files {
                    std::thread::sleep(SETTLE);
                }
                while let Ok(event) = events.try_recv() {
                    sort(event, &mut files, &mut xds);
                }
                for event in xds {
                    match event {
                        crate::xds::Event::Update(update) => control.xds_update(update),
                        crate::xds::Event::Disconnected(stream) => control.xds_disconnected(&stream),
                        crate::xds::Event::Fetched { sha256, result } => control.fetched(&sha256, result),
                    }
                }
                if files {
                    control.reload();
                    if let Err(e) = watch_new(&mut watcher, &mut watched, &control.sources()) {
                        tracing::warn!("{e}");
                    }
                }
                control.tick();
            }
        })
        .map_err(|e| ServerError::Worker(format!("cannot start the configuration thread: {e}")))
}

/// Files events are taken as one; ADS events each in turn.
fn sort(event: ControlEvent, files: &mut bool, xds: &mut Vec<crate::xds::Event>) {
    match event {
        ControlEvent::Files => *files = true,
        ControlEvent::Xds(e) => xds.push(e),
    }
}

/// Watches the directories of `sources` not watched yet.
fn watch_new(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut Vec<PathBuf>,
    sources: &[FileSource],
) -> Result<(), ServerError> {
    for source in sources {
        let dir = source.watched_directory.clone().unwrap_or_else(|| directory_of(&source.path));
        if watched.contains(&dir) {
            continue;
        }
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| {
            ServerError::Config(format!("cannot watch {} (for {}): {e}", dir.display(), source.path.display()))
        })?;
        watched.push(dir);
    }
    Ok(())
}

/// Whether an event in a watched directory may have changed a file: anything but reads,
/// opens and writes still in progress (the close that ends a write counts).
fn reloads(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Metadata(_)) => {
            false
        }
        _ => true,
    }
}

/// The directory a file is in ("." for a bare file name).
fn directory_of(path: &std::path::Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
