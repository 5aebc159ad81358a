//! IOPub fan-out from one kernel to its WebSocket connections.
//!
//! A ring of the messages some connection has not read yet, bounded in bytes as well as in
//! count: a client that stops reading costs the host at most the budget, never a multiple of
//! the kernel's largest message (tokio's broadcast bounds only the count: 1,024 messages of up
//! to 128 MiB each). A message every reader has seen is dropped at once, and with no reader
//! nothing is kept. A reader that fell behind the ring skips what it missed and is told how
//! many messages that was. [`Ring`] is the pure bookkeeping; [`Fanout`] adds the lock and the
//! wake-ups.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// What a reader gets next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// The next message.
    Item(T),
    /// This many messages were dropped before this reader got them (the ring was over its
    /// budget); reading again continues with the oldest one kept.
    Missed(u64),
    /// Nothing new.
    Empty,
}

/// Messages not yet read by every reader, oldest first.
#[derive(Debug)]
pub struct Ring<T> {
    /// (sequence number, size in bytes, message).
    items: VecDeque<(u64, usize, T)>,
    /// Sequence number the next message gets.
    next_seq: u64,
    bytes: usize,
    max_bytes: usize,
    max_items: usize,
    /// Reader id -> sequence number of the next message it reads.
    cursors: BTreeMap<u64, u64>,
    next_reader: u64,
}

impl<T: Clone> Ring<T> {
    /// A ring keeping at most `max_bytes` and `max_items` (the newest message is always kept,
    /// however large, so that readers keeping up still get it).
    pub fn new(max_bytes: usize, max_items: usize) -> Ring<T> {
        Ring {
            items: VecDeque::new(),
            next_seq: 0,
            bytes: 0,
            max_bytes,
            max_items: max_items.max(1),
            cursors: BTreeMap::new(),
            next_reader: 0,
        }
    }

    /// Registers a reader that starts with the next message pushed; returns its id.
    pub fn add_reader(&mut self) -> u64 {
        let id = self.next_reader;
        self.next_reader += 1;
        self.cursors.insert(id, self.next_seq);
        id
    }

    /// Forgets a reader; what only it had left to read is dropped.
    pub fn remove_reader(&mut self, id: u64) {
        self.cursors.remove(&id);
        self.trim();
    }

    /// Adds a message of `size` bytes, dropping the oldest ones while over the budget.
    pub fn push(&mut self, item: T, size: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.cursors.is_empty() {
            return;
        }
        self.items.push_back((seq, size, item));
        self.bytes += size;
        while self.items.len() > 1
            && (self.bytes > self.max_bytes || self.items.len() > self.max_items)
        {
            self.pop_oldest();
        }
    }

    /// The next message for reader `id`.
    pub fn read(&mut self, id: u64) -> Next<T> {
        let oldest = self.items.front().map_or(self.next_seq, |(seq, ..)| *seq);
        let Some(cursor) = self.cursors.get_mut(&id) else {
            return Next::Empty;
        };
        if *cursor < oldest {
            let missed = oldest - *cursor;
            *cursor = oldest;
            return Next::Missed(missed);
        }
        let index = usize::try_from(*cursor - oldest).unwrap_or(usize::MAX);
        let Some((_, _, item)) = self.items.get(index) else {
            return Next::Empty;
        };
        let item = item.clone();
        *cursor += 1;
        if index == 0 {
            self.trim();
        }
        Next::Item(item)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops the messages every reader has read.
    fn trim(&mut self) {
        let slowest = self
            .cursors
            .values()
            .min()
            .copied()
            .unwrap_or(self.next_seq);
        while self.items.front().is_some_and(|(seq, ..)| *seq < slowest) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, size, _)) = self.items.pop_front() {
            self.bytes -= size;
        }
    }
}

/// A [`Ring`] shared by a kernel's supervisor (which pushes) and its connections (which read).
#[derive(Debug)]
pub struct Fanout<T> {
    ring: Mutex<Ring<T>>,
    pushed: Notify,
}

impl<T: Clone> Fanout<T> {
    /// See [`Ring::new`].
    pub fn new(max_bytes: usize, max_items: usize) -> Arc<Fanout<T>> {
        Arc::new(Fanout {
            ring: Mutex::new(Ring::new(max_bytes, max_items)),
            pushed: Notify::new(),
        })
    }

    fn ring(&self) -> MutexGuard<'_, Ring<T>> {
        // Ring's methods leave it consistent at every step: a panic elsewhere cannot poison it.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message for every reader and wakes them.
    pub fn push(&self, item: T, size: usize) {
        self.ring().push(item, size);
        self.pushed.notify_waiters();
    }

    /// A reader of every message pushed from now on.
    pub fn subscribe(self: &Arc<Self>) -> Reader<T> {
        let id = self.ring().add_reader();
        Reader {
            fanout: self.clone(),
            id,
        }
    }

    /// (messages, bytes) held.
    pub fn held(&self) -> (usize, usize) {
        let ring = self.ring();
        (ring.len(), ring.bytes())
    }
}

/// One connection's place in a [`Fanout`]; unregisters on drop.
#[derive(Debug)]
pub struct Reader<T: Clone> {
    fanout: Arc<Fanout<T>>,
    id: u64,
}

impl<T: Clone> Reader<T> {
    /// The next message if there is one, without waiting.
    pub fn try_next(&mut self) -> Next<T> {
        self.read()
    }

    fn read(&self) -> Next<T> {
        self.fanout.ring().read(self.id)
    }

    /// Waits for the next message (or news of missed ones). Cancel-safe: nothing is consumed
    /// unless it is returned.
    pub async fn next(&mut self) -> Next<T> {
        loop {
            // Registered before looking, so a push in between still wakes us.
            let pushed = self.fanout.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            match self.read() {
                Next::Empty => pushed.await,
                next => return next,
            }
        }
    }
}

impl<T: Clone> Drop for Reader<T> {
    fn drop(&mut self) {
        self.fanout.ring().remove_reader(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring<u32> {
        Ring::new(100, 10)
    }

    #[test]
    fn nothing_is_kept_without_readers() {
        let mut r = ring();
        r.push(1, 10);
        assert!(r.is_empty());
        let a = r.add_reader();
        assert_eq!(
            r.read(a),
            Next::Empty,
            "a reader starts after what was pushed"
        );
    }

    #[test]
    fn a_message_everyone_read_is_dropped() {
        let mut r = ring();
        let (a, b) = (r.add_reader(), r.add_reader());
        r.push(1, 10);
        r.push(2, 10);
        assert_eq!(r.read(a), Next::Item(1));
        assert_eq!((r.len(), r.bytes()), (2, 20), "b has not read 1 yet");
        assert_eq!(r.read(b), Next::Item(1));
        assert_eq!((r.len(), r.bytes()), (1, 10));
        assert_eq!(r.read(a), Next::Item(2));
        assert_eq!(r.read(a), Next::Empty);
        r.remove_reader(b);
        assert!(r.is_empty(), "what only b had left goes with it");
    }

    #[test]
    fn a_slow_reader_costs_at_most_the_budget_and_learns_what_it_missed() {
        let mut r = ring();
        let (fast, slow) = (r.add_reader(), r.add_reader());
        for i in 0..50 {
            r.push(i, 30);
            assert_eq!(r.read(fast), Next::Item(i));
            assert!(r.bytes() <= 100, "{} bytes held", r.bytes());
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.read(slow), Next::Missed(47));
        assert_eq!(r.read(slow), Next::Item(47));
        assert_eq!(r.read(slow), Next::Item(48));
        assert_eq!(r.read(slow), Next::Item(49));
        assert_eq!(r.read(slow), Next::Empty);
        assert!(r.is_empty());
    }

    #[test]
    fn the_count_is_bounded_too_and_a_huge_message_is_still_delivered() {
        let mut r = ring();
        let a = r.add_reader();
        for i in 0..15 {
            r.push(i, 1);
        }
        assert_eq!(r.len(), 10);
        assert_eq!(r.read(a), Next::Missed(5));
        let b = r.add_reader();
        r.push(99, 1_000);
        assert_eq!(r.len(), 1, "over budget alone, the newest is kept");
        assert_eq!(r.read(b), Next::Item(99));
        assert_eq!(r.read(a), Next::Missed(10));
        assert_eq!(r.read(a), Next::Item(99));
        assert!(r.is_empty());
    }

    #[test]
    fn an_unknown_reader_reads_nothing() {
        let mut r = ring();
        let a = r.add_reader();
        r.push(1, 1);
        assert_eq!(r.read(a + 7), Next::Empty);
    }

    #[tokio::test]
    async fn readers_wait_for_pushes_and_unregister_on_drop() {
        use std::time::Duration;
        let fanout = Fanout::<u32>::new(1 << 20, 16);
        let mut reader = fanout.subscribe();
        let pusher = fanout.clone();
        let push_later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pusher.push(7, 1);
        });
        let first = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
        assert_eq!(first.ok(), Some(Next::Item(7)));
        let _ = push_later.await;
        drop(reader);
        fanout.push(8, 1);
        assert_eq!(fanout.held(), (0, 0), "no reader left: nothing kept");
    }
}
