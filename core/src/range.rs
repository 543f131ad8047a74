//! Guest-frame and host-virtual address ranges.
//!
//! Ranges are half-open, `[start, end)`, non-empty, and bounded by [`MAX_GFN`] / [`MAX_HVA`],
//! so the crate can use `u64::MAX` as its "no range" sentinel (KVM's `INVALID_GPA`) without a
//! collision. Construction validates; a value of these types is always well formed.

use crate::error::Error;
use core::fmt;

macro_rules! address_type {
    ($(#[doc = $doc:literal])* $name:ident) => {
        $(#[doc = $doc])*
        ///
        /// A newtype over `u64`, so that a guest frame, a host address and a host frame cannot
        /// be passed for one another: the field is public (`Gfn(0x10)`, `gfn.0`), `From`
        /// converts both ways, and `+ u64` / `- u64` offset it (two values of the same kind
        /// subtract to a count). `Debug` prints the type and the value in hex;
        /// `Display` and `LowerHex` print the number alone.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[cfg_attr(
            feature = "serde",
            derive(serde::Serialize, serde::Deserialize),
            serde(transparent)
        )]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The number itself.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + n`, or `None` on overflow of `u64`.
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// How far `self` lies past `base` (`self - base`), or `None` if it lies before.
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
        }

        /// An offset: `addr + n`. Panics on overflow like `u64`'s `+` in debug builds; the
        /// crate's own code uses [`checked_add`](Self::checked_add).
        impl core::ops::Add<u64> for $name {
            type Output = Self;
            fn add(self, n: u64) -> Self {
                Self(self.0 + n)
            }
        }

        /// An offset back: `addr - n`.
        impl core::ops::Sub<u64> for $name {
            type Output = Self;
            fn sub(self, n: u64) -> Self {
                Self(self.0 - n)
            }
        }

        /// The distance between two values of the same kind: `a - b` is a plain count.
        impl core::ops::Sub for $name {
            type Output = u64;
            fn sub(self, base: Self) -> u64 {
                self.0 - base.0
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A guest frame number: a guest-physical address divided by the page size.
    Gfn
);
address_type!(
    /// A host virtual address (the primary MMU's address space).
    Hva
);
address_type!(
    /// A host page frame number: what a translation resolves to and an SPTE maps.
    Pfn
);

/// The largest guest frame number accepted (exclusive): 52-bit physical addresses, 4 KiB pages.
pub const MAX_GFN: Gfn = Gfn(1 << 40);
/// The largest host virtual address accepted (exclusive): 57-bit (5-level) user space.
pub const MAX_HVA: Hva = Hva(1 << 57);

macro_rules! range_type {
    ($(#[doc = $doc:literal])* $name:ident, $unit:ty, $max:ident) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name {
            start: $unit,
            end: $unit,
        }

        impl $name {
            /// A range `[start, end)`. Fails if it is empty, inverted, or reaches past the
            /// largest accepted value.
            pub const fn new(start: $unit, end: $unit) -> Result<Self, Error> {
                if start.0 > end.0 {
                    Err(Error::InvertedRange)
                } else if start.0 == end.0 {
                    Err(Error::EmptyRange)
                } else if end.0 > $max.0 {
                    Err(Error::RangeOverflow)
                } else {
                    Ok(Self { start, end })
                }
            }

            /// The range holding exactly `at`.
            pub const fn single(at: $unit) -> Result<Self, Error> {
                match at.checked_add(1) {
                    Some(end) => Self::new(at, end),
                    None => Err(Error::RangeOverflow),
                }
            }

            /// First element.
            pub const fn start(&self) -> $unit {
                self.start
            }

            /// One past the last element.
            pub const fn end(&self) -> $unit {
                self.end
            }

            /// Number of elements.
            pub const fn len(&self) -> u64 {
                self.end.0 - self.start.0
            }

            /// Always false: ranges are never empty. Present for API symmetry.
            pub const fn is_empty(&self) -> bool {
                false
            }

            /// Whether `at` lies in the range.
            pub const fn contains(&self, at: $unit) -> bool {
                self.start.0 <= at.0 && at.0 < self.end.0
            }

            /// Whether the two ranges share an element.
            pub const fn overlaps(&self, other: &Self) -> bool {
                self.start.0 < other.end.0 && other.start.0 < self.end.0
            }

            /// The shared part of two ranges, if any.
            pub const fn intersect(&self, other: &Self) -> Option<Self> {
                let start = if self.start.0 > other.start.0 { self.start } else { other.start };
                let end = if self.end.0 < other.end.0 { self.end } else { other.end };
                if start.0 < end.0 {
                    Some(Self { start, end })
                } else {
                    None
                }
            }

            /// The smallest range covering both (the min/max union).
            pub const fn union(&self, other: &Self) -> Self {
                let start = if self.start.0 < other.start.0 { self.start } else { other.start };
                let end = if self.end.0 > other.end.0 { self.end } else { other.end };
                Self { start, end }
            }
        }
    };
}

range_type!(
    /// A non-empty half-open range of guest frame numbers.
    GfnRange, Gfn, MAX_GFN
);
impl GfnRange {
    /// Every frame of the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = Gfn> + Clone {
        (self.start.0..self.end.0).map(Gfn)
    }
}

range_type!(
    /// A non-empty half-open range of host virtual addresses.
    HvaRange, Hva, MAX_HVA
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_validates() {
        assert_eq!(GfnRange::new(Gfn(5), Gfn(5)), Err(Error::EmptyRange));
        assert_eq!(GfnRange::new(Gfn(6), Gfn(5)), Err(Error::InvertedRange));
        assert_eq!(GfnRange::new(Gfn(0), MAX_GFN + 1), Err(Error::RangeOverflow));
        assert_eq!(GfnRange::single(Gfn(u64::MAX)), Err(Error::RangeOverflow));
        let r = GfnRange::new(Gfn(2), Gfn(8)).unwrap();
        assert!(r.contains(Gfn(2)) && r.contains(Gfn(7)) && !r.contains(Gfn(8)));
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn union_and_intersection() {
        let a = GfnRange::new(Gfn(0), Gfn(4)).unwrap();
        let b = GfnRange::new(Gfn(10), Gfn(12)).unwrap();
        assert_eq!(a.union(&b), GfnRange::new(Gfn(0), Gfn(12)).unwrap());
        assert_eq!(a.intersect(&b), None);
        assert!(!a.overlaps(&b));
        let c = GfnRange::new(Gfn(3), Gfn(11)).unwrap();
        assert_eq!(a.intersect(&c), GfnRange::new(Gfn(3), Gfn(4)).ok());
    }
}
