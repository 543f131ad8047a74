//! `MemslotsRead::find` (a binary search over cells kept sorted by first gfn) against a linear
//! scan, through creates, moves and deletes in every order.

#![cfg(feature = "std")]

use mmusync::{ActiveInvalidations, Error, Gfn, Hva, Memslot, MemslotConfig, Memslots, SlotChange, StdHal};

/// xorshift64*: a fixed sequence, so the test is deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const N: usize = 64;

/// Slot `id` may sit on any of 256 blocks of 8 gfns; its size is 1..=8 pages.
fn random_slot(rng: &mut Rng, id: u16) -> Memslot {
    let base = rng.below(256) * 8;
    let npages = 1 + rng.below(8);
    let hva = Hva(0x100_0000 + u64::from(id) * 0x10_0000);
    match Memslot::new(MemslotConfig { id, base_gfn: Gfn(base), npages, hva }) {
        Ok(slot) => slot,
        Err(e) => panic!("slot {id}: {e}"),
    }
}

#[test]
fn find_agrees_with_a_linear_scan_through_random_changes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let slots: Memslots<StdHal, N> = Memslots::new(StdHal);
    let active = ActiveInvalidations::new(StdHal);
    let (mut created, mut full) = (0, 0);
    for step in 0..800 {
        let id = rng.below(2 * N as u64) as u16;
        let change = match rng.below(3) {
            0 => SlotChange::Create(random_slot(&mut rng, id)),
            1 => SlotChange::Move { id, base_gfn: Gfn(rng.below(256) * 8) },
            _ => SlotChange::Delete(id),
        };
        match slots.update(&active, change, |_| {}) {
            Ok(()) => created += usize::from(matches!(change, SlotChange::Create(_))),
            Err(Error::SlotsFull) => full += 1,
            Err(Error::SlotOverlap { .. } | Error::NoSuchSlot { .. }) => {}
            Err(e) => panic!("step {step}: {change:?}: {e}"),
        }
        let read = slots.read();
        let all: Vec<Memslot> = read.iter().collect();
        assert!(
            all.windows(2).all(|w| w[0].gfns().end() <= w[1].gfns().start()),
            "step {step}: cells sorted"
        );
        for gfn in (0..2100).map(Gfn) {
            let linear = all.iter().find(|s| s.gfns().contains(gfn)).copied();
            assert_eq!(read.find(gfn), linear, "step {step}: gfn {gfn}");
        }
    }
    assert!(created > 100 && full > 0, "the sequence reaches a full set ({created} creates, {full} full)");
}

#[test]
fn find_at_the_capacity_of_512_slots() {
    let slots: Memslots<StdHal, 512> = Memslots::new(StdHal);
    let active = ActiveInvalidations::new(StdHal);
    // Created in a scrambled order: 511 * k mod 512 visits every block once.
    for k in 0..512u64 {
        let block = (k * 511) % 512;
        let slot = Memslot::new(MemslotConfig {
            id: block as u16,
            base_gfn: Gfn(block * 4),
            npages: 2,
            hva: Hva(0x200_0000 + block * 0x2000),
        })
        .unwrap();
        slots.update(&active, SlotChange::Create(slot), |_| {}).unwrap();
    }
    let extra =
        Memslot::new(MemslotConfig { id: 600, base_gfn: Gfn(4096), npages: 1, hva: Hva(0x1000) }).unwrap();
    assert_eq!(slots.update(&active, SlotChange::Create(extra), |_| {}), Err(Error::SlotsFull));
    let read = slots.read();
    for gfn in 0..2048 {
        let found = read.find(Gfn(gfn)).map(|s| s.id());
        let want = (gfn % 4 < 2).then_some((gfn / 4) as u16);
        assert_eq!(found, want, "gfn {gfn}");
    }
}
