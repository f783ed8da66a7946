//! The filters' global allocator: a small cache of freed blocks, by size class, in front of the
//! system allocator (wasi-libc's dlmalloc).
//!
//! Why: every value the proxy hands a filter (a header, a property, a shared-data value) is
//! allocated by the host calling the module's `proxy_on_memory_allocate` and freed by the filter
//! when done, and every stream's context is boxed; dlmalloc costs ~120 wasm instructions per
//! `malloc` and ~100 per `free`, so a request that reads two values spends ~700 instructions in
//! it. The same sizes come back request after request, so freed blocks of up to
//! [`MAX_CACHED`] bytes are kept in per-class stacks and handed out again (~30 instructions per
//! operation). Bounded: at most [`DEPTH`] blocks per class ([`CLASSES`] classes, so at most
//! 32 KiB held); anything else goes straight to the inner allocator.
//!
//! The second (and last) module with `unsafe` code besides [`crate::abi`]: implementing
//! [`GlobalAlloc`] is unsafe by definition. It is generic over the inner allocator so its logic
//! is tested natively against `System` (`tests` below: random allocate/grow/shrink/free
//! sequences, every live block filled with its own pattern and checked before it is freed).

#![allow(
    unsafe_code,
    reason = "a GlobalAlloc implementation: every block below states its SAFETY argument"
)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size step of the classes.
const GRANULE: usize = 16;
/// Number of classes: blocks of 16, 32, …, 256 bytes.
pub const CLASSES: usize = 16;
/// Largest size served from the cache.
pub const MAX_CACHED: usize = GRANULE * CLASSES;
/// Freed blocks kept per class.
pub const DEPTH: usize = 8;
/// Every class block is allocated with this alignment, so it serves any request up to it.
const CLASS_ALIGN: usize = 8;

struct Cache {
    blocks: [[*mut u8; DEPTH]; CLASSES],
    len: [usize; CLASSES],
}

/// [`GlobalAlloc`] that caches freed small blocks of `A` (see the [module docs](self)).
pub struct Reuse<A> {
    inner: A,
    cache: UnsafeCell<Cache>,
}

// SAFETY: wasm32 without the `atomics` feature has exactly one thread, so the cache is never
// accessed concurrently. (Elsewhere `Reuse` is not `Sync` and cannot be a global allocator.)
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Reuse<A> {}

impl<A> Reuse<A> {
    /// A cache in front of `inner`.
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            cache: UnsafeCell::new(Cache {
                blocks: [[null_mut(); DEPTH]; CLASSES],
                len: [0; CLASSES],
            }),
        }
    }
}

/// The class of a layout served from the cache, if any.
const fn class_of(size: usize, align: usize) -> Option<usize> {
    if size == 0 || size > MAX_CACHED || align > CLASS_ALIGN {
        None
    } else {
        Some((size - 1) / GRANULE)
    }
}

/// The layout every block of `class` is allocated from the inner allocator with.
const fn class_layout(class: usize) -> Layout {
    match Layout::from_size_align((class + 1) * GRANULE, CLASS_ALIGN) {
        Ok(layout) => layout,
        // Unreachable: the size is at most MAX_CACHED and the alignment a power of two.
        Err(_) => Layout::new::<u8>(),
    }
}

impl<A: GlobalAlloc> Reuse<A> {
    /// A cached block of `class`, or a new one from the inner allocator.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]; no other reference to the cache may be alive (single thread,
    /// and the inner allocator never calls back into this one).
    unsafe fn alloc_class(&self, class: usize) -> *mut u8 {
        // SAFETY: single-threaded and not reentrant (see above): this is the only reference.
        let cache = unsafe { &mut *self.cache.get() };
        if let (Some(len), Some(stack)) = (cache.len.get_mut(class), cache.blocks.get(class))
            && let Some(top) = len.checked_sub(1)
            && let Some(block) = stack.get(top)
        {
            *len = top;
            return *block;
        }
        // SAFETY: the class layout has a non-zero size.
        unsafe { self.inner.alloc(class_layout(class)) }
    }

    /// Keeps `ptr` (a block of `class`) for reuse, or frees it when its stack is full.
    ///
    /// # Safety
    /// `ptr` must be a live block of `class` (allocated by [`Self::alloc_class`]); as
    /// [`Self::alloc_class`] for the cache.
    unsafe fn free_class(&self, ptr: *mut u8, class: usize) {
        // SAFETY: single-threaded and not reentrant: this is the only reference.
        let cache = unsafe { &mut *self.cache.get() };
        if let (Some(len), Some(stack)) = (cache.len.get_mut(class), cache.blocks.get_mut(class))
            && let Some(slot) = stack.get_mut(*len)
        {
            *slot = ptr;
            *len += 1;
            return;
        }
        // SAFETY: `ptr` came from the inner allocator with the class layout.
        unsafe { self.inner.dealloc(ptr, class_layout(class)) }
    }
}

// `realloc` is the trait's default (allocate, copy, free): overriding it to keep blocks in place
// cost 1.2 KB of module size. SAFETY: blocks handed out are either the inner allocator's for the caller's layout, or blocks
// of a class whose size (a multiple of 16, at least the request) and alignment (8, at least the
// request) fit the layout; a block is in the cache only while nobody owns it, and leaves it
// before it is handed out again.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Reuse<A> {
    // Not inlined: each of the module's allocation sites would get a copy (+14 KB measured).
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            // SAFETY: as the caller's contract.
            Some(class) => unsafe { self.alloc_class(class) },
            // SAFETY: as the caller's contract.
            None => unsafe { self.inner.alloc(layout) },
        }
    }

    // Not inlined: each of the module's allocation sites would get a copy (+14 KB measured).
    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout.size(), layout.align()) {
            // SAFETY: `layout` is the one `ptr` was allocated with, so it is a block of `class`.
            Some(class) => unsafe { self.free_class(ptr, class) },
            // SAFETY: as the caller's contract: the inner allocator's block for `layout`.
            None => unsafe { self.inner.dealloc(ptr, layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, reason = "test code")]

    use std::alloc::System;

    use super::*;

    struct Live {
        ptr: *mut u8,
        layout: Layout,
        fill: u8,
    }

    fn check(block: &Live) {
        for i in 0..block.layout.size() {
            // SAFETY: `ptr` is live for `layout.size()` bytes.
            assert_eq!(
                unsafe { *block.ptr.add(i) },
                block.fill,
                "block overwritten"
            );
        }
    }

    fn fill(block: &Live) {
        // SAFETY: `ptr` is live for `layout.size()` bytes.
        unsafe { std::ptr::write_bytes(block.ptr, block.fill, block.layout.size()) };
        assert_eq!(block.ptr as usize % block.layout.align(), 0, "misaligned");
    }

    #[test]
    fn freed_small_blocks_are_reused_and_the_cache_is_bounded() {
        let a = Reuse::new(System);
        let layout = Layout::from_size_align(23, 1).unwrap();
        // SAFETY: valid non-zero layouts; each block freed once with its layout.
        unsafe {
            let p = a.alloc(layout);
            a.dealloc(p, layout);
            let q = a.alloc(Layout::from_size_align(30, 4).unwrap());
            assert_eq!(p, q, "same class: the block comes back");
            a.dealloc(q, Layout::from_size_align(30, 4).unwrap());
            let many: Vec<_> = (0..3 * DEPTH).map(|_| a.alloc(layout)).collect();
            for p in &many {
                a.dealloc(*p, layout);
            }
            assert_eq!((*a.cache.get()).len[1], DEPTH);
            let big = Layout::from_size_align(MAX_CACHED + 1, 1).unwrap();
            let p = a.alloc(big);
            a.dealloc(p, big);
            assert_eq!((*a.cache.get()).len.iter().sum::<usize>(), DEPTH);
        }
    }

    proptest::proptest! {
        /// Any sequence of allocations, reallocations and frees (sizes around the cached
        /// range, alignments 1–32): no block overlaps another, every block keeps its contents
        /// (realloc keeps the common prefix) and is aligned.
        #[test]
        fn blocks_never_overlap_and_keep_their_contents(
            ops in proptest::collection::vec((0u8..3, 1usize..400, 0u32..6, 0usize..64), 1..300),
        ) {
            let a = Reuse::new(System);
            let mut live: Vec<Live> = Vec::new();
            for (n, (op, size, align_log, pick)) in ops.into_iter().enumerate() {
                let fill_byte = u8::try_from(n % 251).unwrap();
                match op {
                    0 => {
                        let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                        // SAFETY: a valid non-zero layout.
                        let ptr = unsafe { a.alloc(layout) };
                        proptest::prop_assert!(!ptr.is_null());
                        let block = Live { ptr, layout, fill: fill_byte };
                        fill(&block);
                        live.push(block);
                    }
                    1 if !live.is_empty() => {
                        let block = live.swap_remove(pick % live.len());
                        check(&block);
                        // SAFETY: a live block with its layout, freed once.
                        unsafe { a.dealloc(block.ptr, block.layout) };
                    }
                    _ if !live.is_empty() => {
                        let at = pick % live.len();
                        let block = &mut live[at];
                        check(block);
                        let keep = block.layout.size().min(size);
                        // SAFETY: a live block with its layout; `size` is non-zero.
                        let ptr = unsafe { a.realloc(block.ptr, block.layout, size) };
                        proptest::prop_assert!(!ptr.is_null());
                        for i in 0..keep {
                            // SAFETY: the new block is live for at least `keep` bytes.
                            proptest::prop_assert_eq!(unsafe { *ptr.add(i) }, block.fill);
                        }
                        block.ptr = ptr;
                        block.layout = Layout::from_size_align(size, block.layout.align()).unwrap();
                        block.fill = fill_byte;
                        fill(block);
                    }
                    _ => {}
                }
            }
            for block in live {
                check(&block);
                // SAFETY: a live block with its layout, freed once.
                unsafe { a.dealloc(block.ptr, block.layout) };
            }
        }
    }
}
