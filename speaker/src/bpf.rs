//! The few `bpf(2)` commands the in-kernel ARP responder needs: maps, loading a program, tcx
//! links and test runs. Thin and unsafe only at the syscall; everything it returns owns its
//! file descriptor, so the kernel detaches the program when the speaker exits, however it exits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::packet::ebpf::Instruction;

const CMD_MAP_CREATE: libc::c_long = 0;
const CMD_MAP_LOOKUP_ELEM: libc::c_long = 1;
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_MAP_DELETE_ELEM: libc::c_long = 3;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_PROG_TEST_RUN: libc::c_long = 10;
const CMD_LINK_CREATE: libc::c_long = 28;

pub const MAP_TYPE_HASH: u32 = 1;
pub const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const PROG_TYPE_SCHED_CLS: u32 = 3;
const ATTACH_TCX_INGRESS: u32 = 46;

/// Room for every command's attributes; the kernel wants the bytes it does not know zeroed.
const ATTR_LEN: usize = 128;
/// The verifier's explanation when a load fails.
const LOG_LEN: usize = 64 * 1024;

/// A `union bpf_attr`, filled field by field at the offsets of the kernel's layout.
struct Attributes([u8; ATTR_LEN]);

impl Attributes {
    fn new() -> Self {
        Self([0; ATTR_LEN])
    }

    fn u32(&mut self, offset: usize, value: u32) -> &mut Self {
        self.bytes(offset, &value.to_ne_bytes())
    }

    fn u64(&mut self, offset: usize, value: u64) -> &mut Self {
        self.bytes(offset, &value.to_ne_bytes())
    }

    fn pointer<T>(&mut self, offset: usize, pointer: *const T) -> &mut Self {
        self.u64(offset, pointer as usize as u64)
    }

    fn bytes(&mut self, offset: usize, value: &[u8]) -> &mut Self {
        if let Some(slot) = self.0.get_mut(offset..offset + value.len()) {
            slot.copy_from_slice(value);
        }
        self
    }
}

/// Runs one command; the attributes' pointers must be valid for the call.
#[allow(unsafe_code)]
fn bpf(command: libc::c_long, attributes: &mut Attributes) -> io::Result<libc::c_long> {
    // SAFETY: the attribute block is ATTR_LEN live bytes; every pointer written into it by the
    // callers refers to a buffer they keep borrowed across this call, with its length beside it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attributes.0.as_mut_ptr(),
            ATTR_LEN as libc::c_uint,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

#[allow(unsafe_code)]
fn owned_fd(result: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(result).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    // SAFETY: a successful bpf() that creates an object returns a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name_bytes(name: &str) -> [u8; 16] {
    let mut bytes = [0; 16];
    for (slot, byte) in bytes.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    bytes
}

/// A BPF map.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_len: usize,
    value_len: usize,
}

impl Map {
    pub fn create(
        map_type: u32,
        name: &str,
        key_len: usize,
        value_len: usize,
        max_entries: u32,
        flags: u32,
    ) -> io::Result<Self> {
        let mut attributes = Attributes::new();
        attributes
            .u32(0, map_type)
            .u32(4, len_u32(key_len)?)
            .u32(8, len_u32(value_len)?)
            .u32(12, max_entries)
            .u32(16, flags)
            .bytes(28, &name_bytes(name));
        let fd = owned_fd(bpf(CMD_MAP_CREATE, &mut attributes)?)?;
        Ok(Self {
            fd,
            key_len,
            value_len,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key, value.len())?;
        let mut attributes = Attributes::new();
        attributes
            .u32(0, fd_u32(self.fd())?)
            .pointer(8, key.as_ptr())
            .pointer(16, value.as_ptr());
        bpf(CMD_MAP_UPDATE_ELEM, &mut attributes).map(drop)
    }

    /// Removes `key`; absent is not an error.
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        self.check(key, self.value_len)?;
        let mut attributes = Attributes::new();
        attributes
            .u32(0, fd_u32(self.fd())?)
            .pointer(8, key.as_ptr());
        match bpf(CMD_MAP_DELETE_ELEM, &mut attributes) {
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The value of `key` into `value` (for a per-CPU map, one slot per possible CPU);
    /// false when absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, self.value_len)?;
        let mut attributes = Attributes::new();
        attributes
            .u32(0, fd_u32(self.fd())?)
            .pointer(8, key.as_ptr())
            .pointer(16, value.as_mut_ptr());
        match bpf(CMD_MAP_LOOKUP_ELEM, &mut attributes) {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn check(&self, key: &[u8], value_len: usize) -> io::Result<()> {
        if key.len() == self.key_len && value_len == self.value_len {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "key or value of the wrong size for this map",
            ))
        }
    }
}

/// A loaded tc (sched_cls) program.
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Loads `instructions`; a rejection carries the verifier's log.
    pub fn load_tc(name: &str, instructions: &[Instruction]) -> io::Result<Self> {
        let bytes: Vec<u8> = instructions.iter().flat_map(|i| i.to_bytes()).collect();
        let license = c"Apache-2.0";
        let mut log = vec![0u8; LOG_LEN];
        let mut attributes = Attributes::new();
        attributes
            .u32(0, PROG_TYPE_SCHED_CLS)
            .u32(4, len_u32(instructions.len())?)
            .pointer(8, bytes.as_ptr())
            .pointer(16, license.as_ptr())
            .u32(24, 1)
            .u32(28, len_u32(log.len())?)
            .pointer(32, log.as_mut_ptr())
            .bytes(48, &name_bytes(name));
        match bpf(CMD_PROG_LOAD, &mut attributes) {
            Ok(fd) => Ok(Self { fd: owned_fd(fd)? }),
            Err(error) => {
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]);
                // The end of the log says where verification stopped.
                let tail: String = log
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ");
                Err(io::Error::new(
                    error.kind(),
                    format!("{error}; verifier: {tail}"),
                ))
            }
        }
    }

    /// Attaches to the ingress of interface `ifindex` beside any other tcx programs; detached
    /// when the link is dropped.
    pub fn attach_tcx_ingress(&self, ifindex: u32) -> io::Result<Link> {
        let mut attributes = Attributes::new();
        attributes
            .u32(0, fd_u32(self.fd.as_raw_fd())?)
            .u32(4, ifindex)
            .u32(8, ATTACH_TCX_INGRESS);
        Ok(Link {
            _fd: owned_fd(bpf(CMD_LINK_CREATE, &mut attributes)?)?,
        })
    }

    /// Runs the program once on `frame` (as received on interface `ifindex`, which must be in
    /// the caller's network namespace) without attaching it: returns the verdict and the frame
    /// as the program left it.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> io::Result<(i32, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        // struct __sk_buff as the context: only ifindex (offset 40) set.
        let mut context_in = [0u8; 192];
        context_in[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut attributes = Attributes::new();
        attributes
            .u32(0, fd_u32(self.fd.as_raw_fd())?)
            .u32(8, len_u32(frame.len())?)
            .u32(12, len_u32(out.len())?)
            .pointer(16, frame.as_ptr())
            .pointer(24, out.as_mut_ptr())
            .u32(32, 1)
            .u32(40, len_u32(context_in.len())?)
            .pointer(48, context_in.as_ptr());
        bpf(CMD_PROG_TEST_RUN, &mut attributes)?;
        let verdict = i32::from_ne_bytes(attributes.0[4..8].try_into().unwrap_or_default());
        let out_len = u32::from_ne_bytes(attributes.0[12..16].try_into().unwrap_or_default());
        out.truncate(usize::try_from(out_len).unwrap_or(0));
        Ok((verdict, out))
    }
}

/// An attachment; dropping it detaches the program.
#[derive(Debug)]
pub struct Link {
    _fd: OwnedFd,
}

fn len_u32(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too long"))
}

fn fd_u32(fd: RawFd) -> io::Result<u32> {
    u32::try_from(fd).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad descriptor"))
}

/// The number of possible CPUs, from `/sys/devices/system/cpu/possible` ("0-3,6"): per-CPU
/// maps hold one value slot for each.
pub fn possible_cpus(list: &str) -> Option<usize> {
    list.trim().split(',').try_fold(0usize, |count, range| {
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (first.parse::<usize>().ok()?, last.parse::<usize>().ok()?),
            None => {
                let only = range.parse::<usize>().ok()?;
                (only, only)
            }
        };
        Some(count + last.checked_sub(first)? + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_cpu_lists_are_counted() {
        assert_eq!(possible_cpus("0-1\n"), Some(2));
        assert_eq!(possible_cpus("0"), Some(1));
        assert_eq!(possible_cpus("0-3,6,8-9"), Some(7));
        assert_eq!(possible_cpus("3-1"), None);
        assert_eq!(possible_cpus("x"), None);
        assert_eq!(possible_cpus(""), None);
    }

    #[test]
    fn names_are_cut_to_fifteen_bytes_and_terminated() {
        let name = name_bytes("ferrolb_arp_answers_long");
        assert_eq!(&name[..15], b"ferrolb_arp_ans");
        assert_eq!(name[15], 0);
    }
}
