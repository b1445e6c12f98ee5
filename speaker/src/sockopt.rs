//! setsockopt for the options `socket2` does not wrap (SO_RCVBUFFORCE, IP_RECVTTL, TCP_MD5SIG):
//! the one place the speaker's socket glue passes a value to the kernel by pointer.

use std::io;
use std::os::fd::AsRawFd;

/// Sets option `name` at `level` to the bytes of `value` (a plain C struct or integer).
#[allow(unsafe_code)]
pub fn set_option<T>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let length = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::other("socket option length"))?;
    // SAFETY: `value` points to `length` initialised bytes for the duration of the call, and
    // the kernel only reads them.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            length,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
