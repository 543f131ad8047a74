//! Guest-frame and host-virtual address ranges.
//!
//! Ranges are half-open, `[start, end)`, non-empty, and bounded by [`MAX_GFN`] / [`MAX_HVA`],
//! so the crate can use `u64::MAX` as its "no range" sentinel (KVM's `INVALID_GPA`) without a
//! collision. Construction validates; a value of these types is always well formed.

use crate::error::Error;

/// A guest frame number.
pub type Gfn = u64;
/// A host virtual address (the primary MMU's address space).
pub type Hva = u64;

/// The largest guest frame number accepted (exclusive): 52-bit physical addresses, 4 KiB pages.
pub const MAX_GFN: Gfn = 1 << 40;
/// The largest host virtual address accepted (exclusive): 57-bit (5-level) user space.
pub const MAX_HVA: Hva = 1 << 57;

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
                if start > end {
                    Err(Error::InvertedRange)
                } else if start == end {
                    Err(Error::EmptyRange)
                } else if end > $max {
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
                self.end - self.start
            }

            /// Always false: ranges are never empty. Present for API symmetry.
            pub const fn is_empty(&self) -> bool {
                false
            }

            /// Whether `at` lies in the range.
            pub const fn contains(&self, at: $unit) -> bool {
                self.start <= at && at < self.end
            }

            /// Whether the two ranges share an element.
            pub const fn overlaps(&self, other: &Self) -> bool {
                self.start < other.end && other.start < self.end
            }

            /// The shared part of two ranges, if any.
            pub const fn intersect(&self, other: &Self) -> Option<Self> {
                let start = if self.start > other.start { self.start } else { other.start };
                let end = if self.end < other.end { self.end } else { other.end };
                if start < end {
                    Some(Self { start, end })
                } else {
                    None
                }
            }

            /// The smallest range covering both (the min/max union).
            pub const fn union(&self, other: &Self) -> Self {
                let start = if self.start < other.start { self.start } else { other.start };
                let end = if self.end > other.end { self.end } else { other.end };
                Self { start, end }
            }
        }
    };
}

range_type!(
    /// A non-empty half-open range of guest frame numbers.
    GfnRange, Gfn, MAX_GFN
);
range_type!(
    /// A non-empty half-open range of host virtual addresses.
    HvaRange, Hva, MAX_HVA
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_validates() {
        assert_eq!(GfnRange::new(5, 5), Err(Error::EmptyRange));
        assert_eq!(GfnRange::new(6, 5), Err(Error::InvertedRange));
        assert_eq!(GfnRange::new(0, MAX_GFN + 1), Err(Error::RangeOverflow));
        assert_eq!(GfnRange::single(u64::MAX), Err(Error::RangeOverflow));
        let r = GfnRange::new(2, 8).unwrap();
        assert!(r.contains(2) && r.contains(7) && !r.contains(8));
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn union_and_intersection() {
        let a = GfnRange::new(0, 4).unwrap();
        let b = GfnRange::new(10, 12).unwrap();
        assert_eq!(a.union(&b), GfnRange::new(0, 12).unwrap());
        assert_eq!(a.intersect(&b), None);
        assert!(!a.overlaps(&b));
        let c = GfnRange::new(3, 11).unwrap();
        assert_eq!(a.intersect(&c), GfnRange::new(3, 4).ok());
    }
}
