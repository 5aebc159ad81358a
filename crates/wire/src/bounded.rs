//! A first-in, first-out queue bounded by item count and by bytes, for anything a peer can make
//! us keep (a kernel's input history, a client's unclaimed IOPub messages): past either bound
//! the oldest items go first, and an item larger than the byte bound by itself is not kept.

use std::collections::VecDeque;

/// See the [module documentation](self). Sizes are the caller's estimate of what each item
/// holds; the queue only adds them up.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: VecDeque<(usize, T)>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<T> BoundedQueue<T> {
    /// An empty queue keeping at most `max_items` items of at most `max_bytes` in all.
    pub fn new(max_items: usize, max_bytes: usize) -> BoundedQueue<T> {
        BoundedQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    /// Whether an item of `size` would be kept: a caller can skip building one that would not.
    pub fn would_keep(&self, size: usize) -> bool {
        self.max_items > 0 && size <= self.max_bytes
    }

    /// Appends `item` of `size` bytes, dropping the oldest items to make room; `false` (and the
    /// queue unchanged) when it is not kept (see [`BoundedQueue::would_keep`]).
    pub fn push(&mut self, item: T, size: usize) -> bool {
        if !self.would_keep(size) {
            return false;
        }
        while self.items.len() >= self.max_items || self.bytes + size > self.max_bytes {
            match self.items.pop_front() {
                Some((old, _)) => self.bytes -= old,
                None => break,
            }
        }
        self.bytes += size;
        self.items.push_back((size, item));
        true
    }

    /// Takes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        let (size, item) = self.items.pop_front()?;
        self.bytes -= size;
        Some(item)
    }

    /// Empties the queue, returning how many items it held.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.bytes = 0;
        n
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held (the sum of the sizes given).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter().map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_past_either_bound() {
        let mut q = BoundedQueue::new(2, 100);
        for n in 0..5 {
            assert!(q.push(n, 10));
        }
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(q.bytes(), 20);

        let mut q = BoundedQueue::new(100, 25);
        for n in 0..5 {
            q.push(n, 10);
        }
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [3, 4]);
        assert!(q.bytes() <= 25);
        assert_eq!(q.pop_front(), Some(3));
        assert_eq!(q.bytes(), 10);
    }

    #[test]
    fn an_item_over_the_byte_bound_is_not_kept_and_changes_nothing() {
        let mut q = BoundedQueue::new(10, 25);
        q.push("a", 10);
        q.push("b", 10);
        assert!(!q.would_keep(26));
        assert!(!q.push("huge", 26));
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 20);
        assert_eq!(q.clear(), 2);
        assert_eq!((q.len(), q.bytes()), (0, 0));
        let mut none = BoundedQueue::new(0, 100);
        assert!(!none.push(1, 0));
        assert!(none.is_empty());
    }
}
