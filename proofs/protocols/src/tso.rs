//! Memory models: sequential consistency and x86-TSO.
//!
//! Under [`Memory::Sc`] a store is visible to every thread at once. Under [`Memory::Tso`] each
//! thread has a FIFO [`StoreBuffer`]: a store enters the buffer, a load reads the thread's own
//! newest buffered value for that variable (store forwarding) or else memory, and a separate
//! model action (`Drain`) moves the oldest entry to memory at any time. A full fence (`mfence`,
//! a locked instruction, `smp_mb`) is an action enabled only when the thread's buffer is empty,
//! so it waits for the buffer to drain. This is the operational x86-TSO model of Sewell et al.;
//! it allows exactly one reordering, a store followed by a load of another variable.

use serde::Serialize;

/// Which memory model a model runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Memory {
    /// Sequential consistency: stores are visible at once.
    Sc,
    /// x86-TSO: per-thread FIFO store buffers, drained nondeterministically.
    Tso,
}

impl Memory {
    /// A short name ("SC", "TSO").
    pub fn name(self) -> &'static str {
        match self {
            Memory::Sc => "SC",
            Memory::Tso => "TSO",
        }
    }
}

/// A thread's FIFO store buffer of `(variable, value)` writes not yet in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreBuffer<V> {
    entries: Vec<(V, u8)>,
}

impl<V: Copy + Eq> StoreBuffer<V> {
    /// An empty buffer.
    pub fn new() -> Self {
        StoreBuffer { entries: Vec::new() }
    }

    /// Buffers a store.
    pub fn push(&mut self, var: V, value: u8) {
        self.entries.push((var, value));
    }

    /// The newest buffered value of `var` (what a load by this thread forwards), if any.
    pub fn forward(&self, var: V) -> Option<u8> {
        self.entries.iter().rev().find(|(v, _)| *v == var).map(|(_, x)| *x)
    }

    /// Removes the oldest entry (it is now in memory).
    pub fn pop(&mut self) -> Option<(V, u8)> {
        if self.entries.is_empty() {
            None
        } else {
            Some(self.entries.remove(0))
        }
    }

    /// Whether the buffer holds nothing (a fence may proceed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_newest_and_drains_fifo() {
        let mut b = StoreBuffer::new();
        b.push(1u8, 5);
        b.push(2u8, 6);
        b.push(1u8, 7);
        assert_eq!(b.forward(1), Some(7));
        assert_eq!(b.forward(3), None);
        assert_eq!(b.pop(), Some((1, 5)));
        assert_eq!(b.pop(), Some((2, 6)));
        assert_eq!(b.pop(), Some((1, 7)));
        assert!(b.is_empty());
    }
}
