//! The scheduling priority of the packet readers.
//!
//! The kernel answers ARP for its own addresses in softirq, ahead of every task; a reader
//! thread is a task, and on a busy node it waits behind whatever else is runnable. A lower nice
//! value gives it more weight, so it is picked sooner when a request wakes it. It stays an
//! ordinary time-shared thread: unlike a real-time one, a flood of requests cannot take a whole
//! CPU from the node's pods.

use std::io;

/// Sets the calling thread's nice value (the thread alone: on Linux, priorities are per
/// thread). Lowering it below the process's needs CAP_SYS_NICE.
#[allow(unsafe_code)]
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    let thread = current_thread_id()?;
    // SAFETY: setpriority takes plain integers and touches no memory.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread, nice) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The nice value of the calling thread.
#[allow(unsafe_code)]
pub fn current_thread_nice() -> io::Result<i32> {
    let thread = current_thread_id()?;
    // getpriority may return -1 as a value: only errno tells an error apart.
    // SAFETY: errno is thread-local; writing it and calling getpriority touch nothing else.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, thread);
        match *libc::__errno_location() {
            0 => Ok(nice),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[allow(unsafe_code)]
fn current_thread_id() -> io::Result<libc::id_t> {
    // SAFETY: gettid takes no arguments and cannot fail.
    let thread = unsafe { libc::gettid() };
    libc::id_t::try_from(thread).map_err(|_| io::Error::other("negative thread id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raising a nice value is allowed without privilege, so this runs anywhere; it shows the
    /// change stays on the thread that made it.
    #[test]
    fn the_nice_value_is_set_for_the_calling_thread_only() {
        let before = current_thread_nice().unwrap();
        // 19 is the highest (least favoured) nice value.
        let target = (before + 3).min(19);
        let in_thread = std::thread::spawn(move || {
            set_current_thread_nice(target).unwrap();
            current_thread_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(in_thread, target);
        assert_eq!(current_thread_nice().unwrap(), before);
    }
}
