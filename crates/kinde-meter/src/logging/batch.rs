//! Log lines gathered in memory and written to stderr by a thread of their
//! own every few milliseconds: no system call and no wake-up on the thread
//! that logs (see [`super::init`] for why).

use std::{
    io::{self, Write},
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait before it is written.
pub const WRITE_EVERY: Duration = Duration::from_millis(5);

/// Past this many bytes waiting, the writer thread is woken at once.
const WAKE_AT: usize = 256 * 1024;

/// Past this many bytes waiting (stderr blocked, or far slower than the
/// lines come), new lines are dropped and counted instead of held.
pub const MOST_WAITING: usize = 16 * 1024 * 1024;

/// Lines waiting, shared by the loggers and the writer thread.
struct Shared {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    closing: bool,
}

/// The `MakeWriter` of the subscriber: each line appended to the waiting
/// bytes under a lock held for the copy only.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it wrote every line.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer of lines to `out` and the guard that writes the last of them.
pub fn to<W: Write + Send + 'static>(out: W) -> io::Result<(BatchWriter, Flusher)> {
    let shared = Arc::new(Shared {
        waiting: Mutex::new(Waiting::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let thread = std::thread::Builder::new()
        .name("kinde-meter-log".to_owned())
        .spawn({
            let shared = shared.clone();
            move || write_until_closed(&shared, out)
        })?;
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_until_closed(shared: &Shared, mut out: impl Write) {
    let mut writing = Vec::new();
    loop {
        let closing = {
            let mut waiting = shared
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if waiting.bytes.is_empty() && !waiting.closing {
                waiting = shared
                    .wake
                    .wait_timeout(waiting, WRITE_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut waiting.bytes, &mut writing);
            waiting.closing
        };
        let dropped = shared.dropped.swap(0, Relaxed);
        if dropped > 0 {
            writing.extend_from_slice(
                format!("{{\"level\":\"WARN\",\"message\":\"{dropped} log lines dropped: stderr did not keep up\"}}\n")
                    .as_bytes(),
            );
        }
        if !writing.is_empty() {
            // Nowhere to report a failed write of the log itself.
            let _ = out.write_all(&writing).and_then(|()| out.flush());
            writing.clear();
        }
        if closing {
            return;
        }
        // Between writes, so that lines gather: a burst is one write.
        std::thread::sleep(WRITE_EVERY);
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut waiting = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if waiting.bytes.len() + line.len() > MOST_WAITING {
            self.shared.dropped.fetch_add(1, Relaxed);
        } else {
            waiting.bytes.extend_from_slice(line);
            if waiting.bytes.len() >= WAKE_AT {
                self.shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_flusher_is_dropped() {
        let sink = Sink::default();
        let (writer, flusher) = to(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        writer.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(flusher);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let of_thread: Vec<usize> = written
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(of_thread, (0..10_000).collect::<Vec<_>>());
        }
        assert_eq!(written.lines().count(), 40_000);
    }

    #[test]
    fn lines_past_the_limit_are_dropped_and_counted_then_reported() {
        // No writer thread: nothing is written out while the lines come.
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let mut writer = BatchWriter {
            shared: shared.clone(),
        };
        let line = vec![b'x'; 1024 * 1024];
        let fitting = MOST_WAITING / line.len();
        for _ in 0..fitting + 3 {
            writer.write_all(&line).unwrap();
        }
        assert_eq!(shared.dropped.load(Relaxed), 3);
        assert_eq!(
            shared.waiting.lock().unwrap().bytes.len(),
            fitting * line.len()
        );
        shared.waiting.lock().unwrap().closing = true;
        let sink = Sink::default();
        write_until_closed(&shared, sink.clone());
        let written = sink.0.lock().unwrap().clone();
        assert_eq!(
            written.len() - fitting * line.len(),
            "{\"level\":\"WARN\",\"message\":\"3 log lines dropped: stderr did not keep up\"}\n"
                .len()
        );
        assert!(String::from_utf8_lossy(&written).contains("3 log lines dropped"));
        assert_eq!(shared.dropped.load(Relaxed), 0);
    }
}
