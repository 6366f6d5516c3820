//! Probe guest: the reader's logic with nothing but the converge imports (no `std`, so no WASI).
#![no_std]
extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

wit_bindgen::generate!({ world: "converge-agent", path: "../../../wit" });

use converge::agent::context::View;
use converge::agent::types::{AgentInfo, Effect, Fact};

/// Every call is a fresh instance, so memory is never given back: a bump allocator from the heap's base in the
/// initial memory (what the linker leaves after the stack and data), growing the memory only past its end.
struct Bump {
    next: core::cell::Cell<usize>,
    end: core::cell::Cell<usize>,
}

// SAFETY: a component instance runs on one thread.
unsafe impl Sync for Bump {}

unsafe extern "C" {
    static __heap_base: u8;
}

const PAGE: usize = 65536;

unsafe impl core::alloc::GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        if self.next.get() == 0 {
            self.next.set(&raw const __heap_base as usize);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
        let start = (self.next.get() + layout.align() - 1) & !(layout.align() - 1);
        let Some(new) = start.checked_add(layout.size()) else { return core::ptr::null_mut() };
        if new > self.end.get() {
            let pages = (new - self.end.get()).div_ceil(PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                return core::ptr::null_mut();
            }
            self.end.set(self.end.get() + pages * PAGE);
        }
        self.next.set(new);
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: core::alloc::Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, new_size: usize) -> *mut u8 {
        // The last block grows in place.
        if ptr as usize + layout.size() == self.next.get() && new_size >= layout.size() {
            let Some(new) = (ptr as usize).checked_add(new_size) else { return core::ptr::null_mut() };
            if new <= self.end.get() {
                self.next.set(new);
                return ptr;
            }
        }
        let Ok(new_layout) = core::alloc::Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        let out = unsafe { self.alloc(new_layout) };
        if !out.is_null() {
            unsafe { core::ptr::copy_nonoverlapping(ptr, out, layout.size().min(new_size)) };
        }
        out
    }
}

#[global_allocator]
static ALLOC: Bump = Bump { next: core::cell::Cell::new(0), end: core::cell::Cell::new(0) };

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocator (with `std`, wasi-libc exports it).
///
/// # Safety
/// Called by the host as the component model's `realloc`: a fresh block when `old_len` is 0, else a block
/// this function returned with that size and alignment.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    let Ok(layout) = Layout::from_size_align(old_len.max(1), align) else { core::arch::wasm32::unreachable() };
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old, layout, new_len)
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable()
    }
    ptr
}

struct Guest;

fn fact(key: &str, id: &str, content: impl Into<String>) -> Fact {
    Fact { key: key.into(), id: id.into(), content: content.into() }
}

impl exports::converge::agent::agent::Guest for Guest {
    fn info() -> AgentInfo {
        AgentInfo {
            name: "reader-lean".into(),
            description: "Probe guest without WASI".into(),
            reads: vec!["in".into()],
            writes: vec!["echo".into()],
            tools: vec![],
            required: false,
        }
    }

    fn execute(ctx: &View) -> Result<Effect, String> {
        let mut out = Vec::new();
        for f in ctx.added("in") {
            out.push(fact("echo", &f.id, format!("{}|count={}", f.content, ctx.count("in"))));
        }
        let keys = ctx.keys().join(",");
        let got = ctx.get("in", "1").map_or_else(|| "none".to_string(), |f| f.content);
        out.push(fact("echo", &format!("meta@{}", ctx.cycle()), format!("goal={};keys={keys};get={got}", ctx.goal())));
        Ok(Effect { facts: out, proposals: vec![], questions: vec![] })
    }
}

export!(Guest);
