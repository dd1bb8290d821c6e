//! Watches the config file for edits, debounced.
//!
//! The watch is on the file's directory, not the file: editors save by writing a new file
//! and renaming it over the old one, and Kubernetes updates a ConfigMap mount by swapping
//! the `..data` symlink, and either way a watch on the old file's inode would go quiet.
//! Every event in the directory means "maybe changed"; the daemon then reads the file and
//! acts only when its content differs from what it last saw.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the OS watch alive; dropping it stops the events.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    pub changes: mpsc::Receiver<()>,
}

/// Starts watching the directory of `path`. After a burst of events, one notification is
/// sent once `debounce` has passed without another.
pub fn watch(path: &Path, debounce: Duration) -> notify::Result<ConfigWatch> {
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening and reading a file is an event too (inotify's IN_OPEN, IN_CLOSE_NOWRITE),
        // and the daemon reads the file on every notification: counting reads as changes
        // would wake it again and again, forever.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let (tx, changes) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Swallow the rest of the burst.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // A full channel already holds a pending notification; that one will do.
            let _ = tx.try_send(());
        }
    });
    Ok(ConfigWatch { _watcher: watcher, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expect_one(w: &mut ConfigWatch) {
        tokio::time::timeout(Duration::from_secs(5), w.changes.recv())
            .await
            .expect("a change notification")
            .expect("channel open");
    }

    async fn expect_none(w: &mut ConfigWatch) {
        assert!(tokio::time::timeout(Duration::from_millis(400), w.changes.recv()).await.is_err());
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("acmk-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn a_burst_of_writes_gives_one_notification() {
        let d = tempdir("burst");
        let f = d.join("config.yaml");
        std::fs::write(&f, "a").unwrap();
        let mut w = watch(&f, Duration::from_millis(100)).unwrap();
        for i in 0..5 {
            std::fs::write(&f, format!("v{i}")).unwrap();
        }
        expect_one(&mut w).await;
        expect_none(&mut w).await;
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn reading_the_file_is_not_a_change() {
        let d = tempdir("read");
        let f = d.join("config.yaml");
        std::fs::write(&f, "a").unwrap();
        let mut w = watch(&f, Duration::from_millis(100)).unwrap();
        for _ in 0..3 {
            assert_eq!(std::fs::read_to_string(&f).unwrap(), "a");
        }
        expect_none(&mut w).await;
        std::fs::write(&f, "b").unwrap();
        expect_one(&mut w).await;
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn rename_over_the_file_is_seen_and_later_edits_too() {
        let d = tempdir("rename");
        let f = d.join("config.yaml");
        std::fs::write(&f, "a").unwrap();
        let mut w = watch(&f, Duration::from_millis(100)).unwrap();
        let tmp = d.join(".config.yaml.swp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        expect_one(&mut w).await;
        std::fs::write(&f, "c").unwrap();
        expect_one(&mut w).await;
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn configmap_style_symlink_swap_is_seen() {
        let d = tempdir("configmap");
        std::fs::create_dir(d.join("..2026_01")).unwrap();
        std::fs::write(d.join("..2026_01/config.yaml"), "a").unwrap();
        std::os::unix::fs::symlink("..2026_01", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.yaml", d.join("config.yaml")).unwrap();
        let mut w = watch(&d.join("config.yaml"), Duration::from_millis(100)).unwrap();
        // What the kubelet does: new timestamped dir, new symlink, rename it over ..data.
        std::fs::create_dir(d.join("..2026_02")).unwrap();
        std::fs::write(d.join("..2026_02/config.yaml"), "b").unwrap();
        std::os::unix::fs::symlink("..2026_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_01")).unwrap();
        expect_one(&mut w).await;
        assert_eq!(std::fs::read_to_string(d.join("config.yaml")).unwrap(), "b");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
