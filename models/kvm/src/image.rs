//! The guest image: the ELF the build script built, embedded in this crate, its loadable
//! segments and its symbols (to name the function a stuck or faulting vCPU was in).

use crate::error::KvmError;
use mmusync_kvm_shared::{IMAGE_BASE, IMAGE_END};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// `object` parses ELF headers in place and needs them aligned; `include_bytes!` is not.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

static ELF: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/mmusync-kvm-guest.elf")));

/// One loadable segment.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: u64,
    /// Bytes from the file.
    pub data: &'static [u8],
    /// Size in memory (the rest after `data` is zeroed: `.bss`).
    pub mem_size: u64,
}

/// The parsed guest image.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// Entry point.
    pub entry: u64,
    /// Loadable segments.
    pub segments: Vec<Segment>,
    /// Function symbols: start, size, demangled name; sorted by start.
    symbols: Vec<(u64, u64, String)>,
}

impl GuestImage {
    /// Parses the embedded guest.
    pub fn load() -> Result<GuestImage, KvmError> {
        let file = object::File::parse(&ELF.0).map_err(|e| KvmError::Image(e.to_string()))?;
        let mut segments = Vec::new();
        for seg in file.segments() {
            let data = seg.data().map_err(|e| KvmError::Image(e.to_string()))?;
            let (addr, mem_size) = (seg.address(), seg.size());
            if mem_size == 0 {
                continue;
            }
            let end =
                addr.checked_add(mem_size).ok_or_else(|| KvmError::Image("segment overflows".into()))?;
            if addr < IMAGE_BASE || end > IMAGE_END || data.len() as u64 > mem_size {
                return Err(KvmError::Image(format!(
                    "segment {addr:#x}..{end:#x} is outside {IMAGE_BASE:#x}..{IMAGE_END:#x}"
                )));
            }
            segments.push(Segment { addr, data, mem_size });
        }
        let entry = file.entry();
        if segments.is_empty() || !(IMAGE_BASE..IMAGE_END).contains(&entry) {
            return Err(KvmError::Image(format!(
                "no loadable segment, or entry {entry:#x} outside the image"
            )));
        }
        let mut symbols: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                Some((s.address(), s.size(), format!("{:#}", rustc_demangle::demangle(name))))
            })
            .collect();
        symbols.sort_by_key(|s| s.0);
        Ok(GuestImage { entry, segments, symbols })
    }

    /// The function `rip` is in, as `name+offset`, or the bare address.
    pub fn symbolize(&self, rip: u64) -> String {
        let i = self.symbols.partition_point(|s| s.0 <= rip);
        match i.checked_sub(1).map(|i| &self.symbols[i]) {
            Some((start, size, name)) if rip - start < (*size).max(1) || *size == 0 => {
                format!("{rip:#x} ({name}+{:#x})", rip - start)
            }
            _ => format!("{rip:#x}"),
        }
    }
}
