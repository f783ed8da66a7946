//! WASI preview1 as Envoy (cpp-host, 2024-12 … 2026-03, i.e. Envoy 1.33–1.36 releases)
//! provides it: the 18-function set. Anything else fails the load, as in those releases.

use wasmtime::Linker;

use super::mem::{Cx, enter, read, write, write_u32, write_u64};
use crate::types::LogLevel;
use crate::vm::HostState;

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;

/// Maximum `random_get` length (cpp-host).
const MAX_RANDOM_BYTES: i32 = 64 * 1024;

pub(super) const NAMES: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "sched_yield",
    "poll_oneoff",
];

fn env_entries(caller: &Cx<'_>) -> Vec<Vec<u8>> {
    caller
        .data()
        .plugin
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

pub(super) fn define(linker: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Cx<'_>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "fd_write", true, true)?;
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Error,
                _ => return Ok(EBADF),
            };
            let Ok(count) = u32::try_from(iovs_len) else {
                return Ok(EFAULT);
            };
            let mut text = Vec::new();
            for i in 0..count {
                let Some(at) = (iovs as u32).checked_add(i.saturating_mul(8)) else {
                    return Ok(EFAULT);
                };
                let Some(iov) = read(&mut c, at as i32, 8) else {
                    return Ok(EFAULT);
                };
                let word = |o: usize| {
                    iov.get(o..o + 4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(u32::from_le_bytes)
                };
                let (Some(ptr), Some(len)) = (word(0), word(4)) else {
                    return Ok(EFAULT);
                };
                let Some(bytes) = read(&mut c, ptr as i32, len as i32) else {
                    return Ok(EFAULT);
                };
                text.extend_from_slice(&bytes);
            }
            let total = text.len();
            if text.last() == Some(&b'\n') {
                text.pop();
            }
            c.data_mut()
                .log(level, String::from_utf8_lossy(&text).into_owned());
            Ok(if write_u32(&mut c, nwritten, total as u32) {
                SUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        m,
        "fd_read",
        |mut c: Cx<'_>, _fd: i32, _iovs: i32, _len: i32, _nread: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_read", false, false)?;
            Ok(ENOSYS)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |mut c: Cx<'_>, _fd: i32, _offset: i64, _whence: i32, _ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_seek", false, false)?;
            c.data_mut().log(
                LogLevel::Error,
                "wasi_snapshot_preview1.fd_seek not implemented".to_owned(),
            );
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_close",
        |mut c: Cx<'_>, _fd: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_close", false, false)?;
            c.data_mut().log(
                LogLevel::Error,
                "wasi_snapshot_preview1.fd_close not implemented".to_owned(),
            );
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: Cx<'_>, fd: i32, buf: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_fdstat_get", true, false)?;
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let mut stat = [0u8; 24];
            if let Some(rights) = stat.get_mut(8..16) {
                rights.copy_from_slice(&64u64.to_le_bytes());
            }
            Ok(if write(&mut c, buf, &stat) {
                SUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        m,
        "fd_fdstat_set_flags",
        |mut c: Cx<'_>, _fd: i32, _flags: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_fdstat_set_flags", true, false)?;
            Ok(ENOSYS)
        },
    )?;
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut c: Cx<'_>, count_ptr: i32, size_ptr: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "environ_sizes_get", true, false)?;
            let entries = env_entries(&c);
            let size: usize = entries.iter().map(Vec::len).sum();
            let ok = write_u32(&mut c, count_ptr, entries.len() as u32)
                && write_u32(&mut c, size_ptr, size as u32);
            Ok(if ok { SUCCESS } else { EFAULT })
        },
    )?;
    linker.func_wrap(
        m,
        "environ_get",
        |mut c: Cx<'_>, array: i32, buf: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "environ_get", true, false)?;
            let entries = env_entries(&c);
            let mut offset = buf as u32;
            for (i, entry) in entries.iter().enumerate() {
                let slot = (array as u32).wrapping_add((i as u32).wrapping_mul(4));
                if !write_u32(&mut c, slot as i32, offset) || !write(&mut c, offset as i32, entry) {
                    return Ok(EFAULT);
                }
                offset = offset.wrapping_add(entry.len() as u32);
            }
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut c: Cx<'_>, argc: i32, size: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "args_sizes_get", true, false)?;
            Ok(
                if write_u32(&mut c, argc, 0) && write_u32(&mut c, size, 0) {
                    SUCCESS
                } else {
                    EFAULT
                },
            )
        },
    )?;
    linker.func_wrap(
        m,
        "args_get",
        |mut c: Cx<'_>, _argv: i32, _buf: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "args_get", true, false)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Cx<'_>, id: i32, _precision: i64, ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "clock_time_get", true, true)?;
            let clock = c.data().shared.clock();
            let now = match id {
                0 => clock.wall_ns(),
                1 => clock.monotonic_ns(),
                _ => return Ok(ENOTSUP),
            };
            Ok(if write_u64(&mut c, ret, now) {
                SUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        m,
        "random_get",
        |mut c: Cx<'_>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "random_get", true, false)?;
            if !(0..=MAX_RANDOM_BYTES).contains(&len) {
                return Ok(EINVAL);
            }
            let mut bytes = vec![0u8; len as usize];
            c.data().shared.random().fill(&mut bytes);
            Ok(if write(&mut c, buf, &bytes) {
                SUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        m,
        "proc_exit",
        |mut c: Cx<'_>, code: i32| -> wasmtime::Result<()> {
            enter(&mut c, "proc_exit", false, false)?;
            c.data_mut().log(
                LogLevel::Error,
                format!("wasi_snapshot_preview1.proc_exit({code})"),
            );
            Err(wasmtime::format_err!(
                "proc_exit({code}) called: the VM cannot continue"
            ))
        },
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |mut c: Cx<'_>,
         _fd: i32,
         _df: i32,
         _p: i32,
         _pl: i32,
         _of: i32,
         _rb: i64,
         _ri: i64,
         _ff: i32,
         _ret: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "path_open", false, false)?;
            Ok(ENOENT)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_get",
        |mut c: Cx<'_>, _fd: i32, _buf: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_prestat_get", true, false)?;
            Ok(EBADF)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |mut c: Cx<'_>, _fd: i32, _p: i32, _l: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "fd_prestat_dir_name", true, false)?;
            Ok(ENOSYS)
        },
    )?;
    linker.func_wrap(m, "sched_yield", |mut c: Cx<'_>| -> wasmtime::Result<i32> {
        enter(&mut c, "sched_yield", false, false)?;
        Ok(SUCCESS)
    })?;
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut c: Cx<'_>, _in: i32, _out: i32, _n: i32, _ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "poll_oneoff", false, false)?;
            Ok(ENOSYS)
        },
    )?;
    Ok(())
}
