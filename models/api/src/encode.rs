//! The inverse of [`decode`](crate::decode): operations → the bytes a fuzzer would feed.
//!
//! Used to write the seed corpora from readable operation lists and to turn a shrunk proptest
//! failure into a fuzz input. It follows `arbitrary`'s encoding: a derived enum reads a
//! little-endian `u32` `x` and takes variant `(x * variants) >> 32`; integers are
//! little-endian; fields come in declaration order.

use crate::op::{CacheKey, Counters, Lock, Op, Owner, Race, SlotKey, Val, VcpuKey, Whose, BOUNDARIES};
use crate::page_table::{PtOp, Scheme};
use mmusync::memslot::PAGE_SIZE;

/// Appends the `u32` that a derived enum with `count` variants decodes as variant `index`.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let x = (index << 32).div_ceil(count);
    out.extend_from_slice(&(x as u32).to_le_bytes());
}

fn val(out: &mut Vec<u8>, v: Val) {
    let v = v.0;
    if v < 64 {
        out.push(v as u8);
    } else if v % PAGE_SIZE == 0 && v / PAGE_SIZE < 64 {
        out.push(0x80 | (v / PAGE_SIZE) as u8);
    } else if let Some(i) = BOUNDARIES.iter().position(|&b| b == v) {
        out.push(0xc0 | i as u8);
    } else {
        out.push(0xff);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn key(out: &mut Vec<u8>, k: SlotKey) {
    assert!(k.0 < 6, "slot key {} cannot be encoded: keys decode modulo 6", k.0);
    out.push(k.0 as u8);
}

fn owner(out: &mut Vec<u8>, o: Owner) {
    variant(out, o as u64, 2);
}

fn lock(out: &mut Vec<u8>, l: Lock) {
    variant(out, l as u64, 4);
}

fn flag(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

fn vcpu(out: &mut Vec<u8>, k: VcpuKey) {
    assert!(k.0 < 2, "vCPU key {} cannot be encoded: keys decode modulo 2", k.0);
    out.push(k.0);
}

fn cache(out: &mut Vec<u8>, k: CacheKey) {
    assert!(k.0 < 4, "cache key {} cannot be encoded: keys decode modulo 4", k.0);
    out.push(k.0);
}

fn counters(out: &mut Vec<u8>, c: Counters) {
    variant(out, c as u64, 5);
}

fn whose(out: &mut Vec<u8>, w: Whose) {
    variant(out, w as u64, 2);
}

fn race(out: &mut Vec<u8>, r: Race) {
    match r {
        Race::None => variant(out, 0, 3),
        Race::Start { start, end } => {
            variant(out, 1, 3);
            val(out, start);
            val(out, end);
        }
        Race::StartEnd { start, end } => {
            variant(out, 2, 3);
            val(out, start);
            val(out, end);
        }
    }
}

/// How many variants [`Op`] has.
const OPS: u64 = 49;

/// The bytes that [`decode`](crate::decode) turns back into `ops`.
///
/// # Panics
///
/// On a [`SlotKey`] of 6 or more, a [`VcpuKey`] of 2 or more or a [`CacheKey`] of 4 or more,
/// which no input decodes to.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        let o = &mut out;
        match *op {
            Op::Begin { owner: w, start, end } => {
                variant(o, 0, OPS);
                owner(o, w);
                val(o, start);
                val(o, end);
            }
            Op::AddRange { owner: w, start, end } => {
                variant(o, 1, OPS);
                owner(o, w);
                val(o, start);
                val(o, end);
            }
            Op::End { owner: w } => {
                variant(o, 2, OPS);
                owner(o, w);
            }
            Op::Inspect { lock: l } => {
                variant(o, 3, OPS);
                lock(o, l);
            }
            Op::Open { start, end } => {
                variant(o, 4, OPS);
                val(o, start);
                val(o, end);
            }
            Op::OpenAddRange { guard, start, end } => {
                variant(o, 5, OPS);
                o.push(guard);
                val(o, start);
                val(o, end);
            }
            Op::Close { guard } => {
                variant(o, 6, OPS);
                o.push(guard);
            }
            Op::Snapshot { owner: w } => {
                variant(o, 7, OPS);
                owner(o, w);
            }
            Op::Retry { lock: l, snap } => {
                variant(o, 8, OPS);
                lock(o, l);
                o.push(snap);
            }
            Op::RetryGfn { lock: l, snap, gfn } => {
                variant(o, 9, OPS);
                lock(o, l);
                o.push(snap);
                val(o, gfn);
            }
            Op::RetryGfnUnsafe { snap, gfn } => {
                variant(o, 10, OPS);
                o.push(snap);
                val(o, gfn);
            }
            Op::RetryLockless { snap } => {
                variant(o, 11, OPS);
                o.push(snap);
            }
            Op::ActiveStart => variant(o, 12, OPS),
            Op::ActiveEnd => variant(o, 13, OPS),
            Op::NotifierStart { start, end } => {
                variant(o, 14, OPS);
                val(o, start);
                val(o, end);
            }
            Op::NotifierEnd { start, end } => {
                variant(o, 15, OPS);
                val(o, start);
                val(o, end);
            }
            Op::NotifierOpen { start, end } => {
                variant(o, 16, OPS);
                val(o, start);
                val(o, end);
            }
            Op::NotifierClose { guard } => {
                variant(o, 17, OPS);
                o.push(guard);
            }
            Op::CreateSlot { id, base_gfn, npages, hva } => {
                variant(o, 18, OPS);
                key(o, id);
                val(o, base_gfn);
                val(o, npages);
                val(o, hva);
            }
            Op::DeleteSlot { id } => {
                variant(o, 19, OPS);
                key(o, id);
            }
            Op::MoveSlot { id, base_gfn } => {
                variant(o, 20, OPS);
                key(o, id);
                val(o, base_gfn);
            }
            Op::FindSlot { gfn } => {
                variant(o, 21, OPS);
                val(o, gfn);
            }
            Op::SrcuLock => variant(o, 22, OPS),
            Op::SrcuUnlock { section } => {
                variant(o, 23, OPS);
                o.push(section);
            }
            Op::CacheActivate { hva } => {
                variant(o, 24, OPS);
                val(o, hva);
            }
            Op::CacheDeactivate => variant(o, 25, OPS),
            Op::CacheCheck { hva } => {
                variant(o, 26, OPS);
                val(o, hva);
            }
            Op::CacheRefresh { hva, attempts, fail, race: r } => {
                variant(o, 27, OPS);
                flag(o, hva.is_some());
                if let Some(h) = hva {
                    val(o, h);
                }
                o.push(attempts);
                flag(o, fail);
                race(o, r);
            }
            Op::VcpuLoad { vcpu: v, cpu } => {
                variant(o, 28, OPS);
                vcpu(o, v);
                whose(o, cpu);
            }
            Op::VcpuPut { vcpu: v } => {
                variant(o, 29, OPS);
                vcpu(o, v);
            }
            Op::WalkBegin { vcpu: v } => {
                variant(o, 30, OPS);
                vcpu(o, v);
            }
            Op::EnterGuest { vcpu: v } => {
                variant(o, 31, OPS);
                vcpu(o, v);
            }
            Op::GuardExit => variant(o, 32, OPS),
            Op::MakeRequest { vcpu: v, bit } => {
                variant(o, 33, OPS);
                vcpu(o, v);
                o.push(bit);
            }
            Op::CheckRequest { vcpu: v, bit } => {
                variant(o, 34, OPS);
                vcpu(o, v);
                o.push(bit);
            }
            Op::Kick { vcpu: v } => {
                variant(o, 35, OPS);
                vcpu(o, v);
            }
            Op::FlushRemoteTlbs => variant(o, 36, OPS),
            Op::ZapGfnRange { start, end } => {
                variant(o, 37, OPS);
                val(o, start);
                val(o, end);
            }
            Op::SlotCacheLookup { gfn } => {
                variant(o, 38, OPS);
                val(o, gfn);
            }
            Op::SlotCacheFill { in_progress, gfn, hva } => {
                variant(o, 39, OPS);
                flag(o, in_progress);
                val(o, gfn);
                flag(o, hva.is_some());
                if let Some(h) = hva {
                    val(o, h);
                }
            }
            Op::SlotCacheGet { gfn } => {
                variant(o, 40, OPS);
                val(o, gfn);
            }
            Op::Age { how, start, end } => {
                variant(o, 41, OPS);
                variant(o, how as u64, 3);
                val(o, start);
                val(o, end);
            }
            Op::VmCacheActivate { index, hva } => {
                variant(o, 42, OPS);
                cache(o, index);
                val(o, hva);
            }
            Op::VmCacheDeactivate { index } => {
                variant(o, 43, OPS);
                cache(o, index);
            }
            Op::VmCacheRefresh { index, fail, race: r } => {
                variant(o, 44, OPS);
                cache(o, index);
                flag(o, fail);
                race(o, r);
            }
            Op::VmCacheCheck { index, hva } => {
                variant(o, 45, OPS);
                cache(o, index);
                val(o, hva);
            }
            Op::VmCacheActivateDirect { index, hva } => {
                variant(o, 46, OPS);
                cache(o, index);
                val(o, hva);
            }
            Op::VmCacheDeactivateDirect { index } => {
                variant(o, 47, OPS);
                cache(o, index);
            }
            Op::VmCacheRefreshWith { index, counters: c, hva, attempts, fail, race: r } => {
                variant(o, 48, OPS);
                cache(o, index);
                counters(o, c);
                flag(o, hva.is_some());
                if let Some(h) = hva {
                    val(o, h);
                }
                o.push(attempts);
                flag(o, fail);
                race(o, r);
            }
        }
    }
    out
}

/// The bytes that [`run_page_table_bytes`](crate::page_table::run_page_table_bytes) decodes
/// back into `scheme` and `ops`.
pub fn encode_page_table(scheme: Scheme, ops: &[PtOp]) -> Vec<u8> {
    const PT_OPS: u64 = 13;
    let mut out = Vec::new();
    variant(&mut out, scheme as u64, 2);
    for op in ops {
        let o = &mut out;
        match *op {
            PtOp::Map { gfn, pfn, writable, mmu_writable } => {
                variant(o, 0, PT_OPS);
                val(o, gfn);
                val(o, pfn);
                flag(o, writable);
                flag(o, mmu_writable);
            }
            PtOp::Zap { start, end, how } => {
                variant(o, 1, PT_OPS);
                val(o, start);
                val(o, end);
                variant(o, how as u64, 3);
            }
            PtOp::Walk { gfn, proof } => {
                variant(o, 2, PT_OPS);
                val(o, gfn);
                variant(o, proof as u64, 4);
            }
            PtOp::FastFault { gfn, write } => {
                variant(o, 3, PT_OPS);
                val(o, gfn);
                flag(o, write);
            }
            PtOp::Fault { gfn, writable } => {
                variant(o, 4, PT_OPS);
                val(o, gfn);
                flag(o, writable);
            }
            PtOp::Invalidate { start, end } => {
                variant(o, 5, PT_OPS);
                val(o, start);
                val(o, end);
            }
            PtOp::MmuMap { gfn, pfn, writable, mmu_writable } => {
                variant(o, 6, PT_OPS);
                val(o, gfn);
                val(o, pfn);
                flag(o, writable);
                flag(o, mmu_writable);
            }
            PtOp::FaultAround { gfn, writable, start, end } => {
                variant(o, 7, PT_OPS);
                val(o, gfn);
                flag(o, writable);
                val(o, start);
                val(o, end);
            }
            PtOp::Prefault { gfn, writable } => {
                variant(o, 8, PT_OPS);
                val(o, gfn);
                flag(o, writable);
            }
            PtOp::HwAccess { gfn, write } => {
                variant(o, 9, PT_OPS);
                val(o, gfn);
                flag(o, write);
            }
            PtOp::Age { how, start, end } => {
                variant(o, 10, PT_OPS);
                variant(o, how as u64, 3);
                val(o, start);
                val(o, end);
            }
            PtOp::ZapGfnRange { start, end } => {
                variant(o, 11, PT_OPS);
                val(o, start);
                val(o, end);
            }
            PtOp::AgeLockless { start, end, clear, foreign } => {
                variant(o, 12, PT_OPS);
                val(o, start);
                val(o, end);
                flag(o, clear);
                flag(o, foreign);
            }
        }
    }
    out
}
