//! Binary relations over the events of one candidate execution.
//!
//! An execution has at most [`MAX_EVENTS`] events, so a set of events is one `u64` and a
//! relation is one `u64` row per event (row `a` has bit `b` set when `a → b`). Composition is
//! an OR of rows, transitive closure is Warshall's algorithm over rows, and "acyclic" is
//! "the closure has no bit on its diagonal". Every model in [`crate::model`] is written with
//! these few operations, in the notation of the papers: `a.seq(&b)` is `a ; b`, `a | b` is
//! union, `a & b` intersection, `a - b` difference, `[S]` is [`Rel::id`].

use core::ops::{BitAnd, BitOr, Sub};

/// The most events one execution may have (including one initial write per location).
pub const MAX_EVENTS: usize = 64;

/// A set of events: bit `i` is event `i`.
pub type Set = u64;

/// Iterates over the members of a set, in increasing order.
pub fn members(mut s: Set) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if s == 0 {
            None
        } else {
            let i = s.trailing_zeros() as usize;
            s &= s - 1;
            Some(i)
        }
    })
}

/// A binary relation over the events `0..n`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rel {
    n: usize,
    rows: [u64; MAX_EVENTS],
}

impl Rel {
    /// The empty relation over `n` events.
    pub fn empty(n: usize) -> Rel {
        assert!(n <= MAX_EVENTS, "an execution has at most {MAX_EVENTS} events");
        Rel { n, rows: [0; MAX_EVENTS] }
    }

    /// The identity restricted to `s` (`[s]` in the papers).
    pub fn id(n: usize, s: Set) -> Rel {
        let mut r = Rel::empty(n);
        for i in members(s) {
            r.rows[i] |= 1 << i;
        }
        r
    }

    /// The Cartesian product `a × b`.
    pub fn product(n: usize, a: Set, b: Set) -> Rel {
        let mut r = Rel::empty(n);
        for i in members(a) {
            r.rows[i] = b;
        }
        r
    }

    /// Adds the pair `a → b`.
    pub fn add(&mut self, a: usize, b: usize) {
        self.rows[a] |= 1 << b;
    }

    /// Whether `a → b`.
    pub fn has(&self, a: usize, b: usize) -> bool {
        self.rows[a] >> b & 1 == 1
    }

    /// The successors of `a`.
    pub fn row(&self, a: usize) -> Set {
        self.rows[a]
    }

    /// Sequential composition `self ; other`.
    pub fn seq(&self, other: &Rel) -> Rel {
        let mut r = Rel::empty(self.n);
        for i in 0..self.n {
            let mut acc = 0;
            for j in members(self.rows[i]) {
                acc |= other.rows[j];
            }
            r.rows[i] = acc;
        }
        r
    }

    /// The inverse relation.
    pub fn inv(&self) -> Rel {
        let mut r = Rel::empty(self.n);
        for i in 0..self.n {
            for j in members(self.rows[i]) {
                r.rows[j] |= 1 << i;
            }
        }
        r
    }

    /// Restricts the domain to `dom` and the range to `ran` (`[dom] ; self ; [ran]`).
    pub fn restrict(&self, dom: Set, ran: Set) -> Rel {
        let mut r = Rel::empty(self.n);
        for i in members(dom) {
            r.rows[i] = self.rows[i] & ran;
        }
        r
    }

    /// The transitive closure `self+`.
    pub fn plus(&self) -> Rel {
        let mut r = *self;
        for k in 0..self.n {
            let rk = r.rows[k];
            let bit = 1u64 << k;
            for i in 0..self.n {
                if r.rows[i] & bit != 0 {
                    r.rows[i] |= rk;
                }
            }
        }
        r
    }

    /// The reflexive-transitive closure `self*` over all events.
    pub fn star(&self) -> Rel {
        self.plus().opt()
    }

    /// The reflexive closure `self?` over all events.
    pub fn opt(&self) -> Rel {
        *self | Rel::id(self.n, self.all())
    }

    /// The set of all events `0..n`.
    pub fn all(&self) -> Set {
        if self.n == MAX_EVENTS {
            u64::MAX
        } else {
            (1u64 << self.n) - 1
        }
    }

    /// The domain: events with a successor.
    pub fn domain(&self) -> Set {
        let mut s = 0;
        for i in 0..self.n {
            if self.rows[i] != 0 {
                s |= 1 << i;
            }
        }
        s
    }

    /// The range: events with a predecessor.
    pub fn range(&self) -> Set {
        self.rows[..self.n].iter().fold(0, |acc, r| acc | r)
    }

    /// Whether no event is related to itself.
    pub fn is_irreflexive(&self) -> bool {
        (0..self.n).all(|i| !self.has(i, i))
    }

    /// Whether the relation has no cycle.
    pub fn is_acyclic(&self) -> bool {
        self.plus().is_irreflexive()
    }

    /// Whether the relation is empty.
    pub fn is_empty(&self) -> bool {
        self.rows[..self.n].iter().all(|&r| r == 0)
    }
}

impl BitOr for Rel {
    type Output = Rel;
    fn bitor(mut self, o: Rel) -> Rel {
        for i in 0..self.n {
            self.rows[i] |= o.rows[i];
        }
        self
    }
}

impl BitAnd for Rel {
    type Output = Rel;
    fn bitand(mut self, o: Rel) -> Rel {
        for i in 0..self.n {
            self.rows[i] &= o.rows[i];
        }
        self
    }
}

impl Sub for Rel {
    type Output = Rel;
    fn sub(mut self, o: Rel) -> Rel {
        for i in 0..self.n {
            self.rows[i] &= !o.rows[i];
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_and_cycles() {
        let mut r = Rel::empty(4);
        r.add(0, 1);
        r.add(1, 2);
        assert!(r.is_acyclic());
        assert!(r.plus().has(0, 2));
        r.add(2, 0);
        assert!(!r.is_acyclic());
        assert_eq!(r.inv().row(0), 1 << 2);
        assert_eq!(r.seq(&r).row(0), 1 << 2);
        assert_eq!(r.restrict(1, 0b10).row(0), 0b10);
        assert_eq!(members(0b1010).collect::<Vec<_>>(), vec![1, 3]);
    }
}
