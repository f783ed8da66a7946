//! Guest memory access and the return-buffer protocol (allocator call, exactly `len` bytes,
//! `(0, 0)` for empty). Every range is bounds-checked in 64-bit arithmetic.

use wasmtime::Caller;

use super::status;
use crate::vm::{HostState, Restriction};

pub(crate) type Cx<'a> = Caller<'a, HostState>;

/// Counts the hostcall and enforces V8's start-up restrictions: a disallowed hostcall traps.
pub(crate) fn enter(
    caller: &mut Cx<'_>,
    name: &str,
    in_start: bool,
    in_allocator: bool,
) -> wasmtime::Result<()> {
    let fuel_left = caller.get_fuel().unwrap_or(0);
    let state = caller.data_mut();
    state.hostcalls += 1;
    let budget = state.fuel_budget;
    if let Some(trace) = &mut state.fuel_trace {
        trace.push(crate::vm::FuelMark {
            what: name.to_owned(),
            fuel: budget.saturating_sub(fuel_left),
        });
    }
    let allowed = match state.restriction {
        Restriction::None => true,
        Restriction::Start => in_start,
        Restriction::Allocator => in_allocator,
    };
    if allowed {
        Ok(())
    } else {
        let phase = if state.restriction == Restriction::Start {
            "VM start (_initialize/main)"
        } else {
            "the allocator"
        };
        Err(wasmtime::format_err!(
            "hostcall {name} is not allowed during {phase}; V8 (Envoy's runtime) traps here"
        ))
    }
}

fn range(ptr: i32, len: i32, size: usize) -> Option<std::ops::Range<usize>> {
    let start = u64::from(ptr as u32);
    let end = start.checked_add(u64::from(len as u32))?;
    if end > size as u64 {
        return None;
    }
    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

/// Reads `len` bytes at `ptr`; `None` when out of bounds. `(0, 0)` is the empty slice.
pub(crate) fn read(caller: &mut Cx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let memory = caller.data().memory?;
    let data = memory.data(&*caller);
    let r = range(ptr, len, data.len())?;
    data.get(r).map(<[u8]>::to_vec)
}

/// Writes `bytes` at `ptr`; false when out of bounds.
pub(crate) fn write(caller: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(memory) = caller.data().memory else {
        return false;
    };
    let data = memory.data_mut(&mut *caller);
    let Ok(len) = i32::try_from(bytes.len()) else {
        return false;
    };
    let Some(r) = range(ptr, len, data.len()) else {
        return false;
    };
    match data.get_mut(r) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

pub(crate) fn write_u32(caller: &mut Cx<'_>, ptr: i32, value: u32) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Cx<'_>, ptr: i32, value: u64) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the module: empty → `(0, 0)` without allocating; otherwise one allocation
/// of exactly `len` bytes through the module's allocator (restricted hostcalls inside).
pub(crate) fn return_bytes(
    caller: &mut Cx<'_>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    if bytes.is_empty() {
        let ok = write_u32(caller, ret_ptr, 0) && write_u32(caller, ret_len, 0);
        return Ok(if ok {
            status::OK
        } else {
            status::INVALID_MEMORY_ACCESS
        });
    }
    let Ok(len) = i32::try_from(bytes.len()) else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let Some(allocator) = caller.data().allocator.clone() else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let saved = caller.data().restriction;
    caller.data_mut().restriction = Restriction::Allocator;
    let result = allocator.call(&mut *caller, len);
    caller.data_mut().restriction = saved;
    let addr = result?;
    if addr == 0 || !write(caller, addr, bytes) {
        return Ok(status::INVALID_MEMORY_ACCESS);
    }
    let ok = write_u32(caller, ret_ptr, addr as u32) && write_u32(caller, ret_len, len as u32);
    Ok(if ok {
        status::OK
    } else {
        status::INVALID_MEMORY_ACCESS
    })
}
