//! The TCP side of a BGP session: one outgoing connection to the router, with the socket options
//! a BGP speaker sets before connecting: the TCP MD5 signature key (RFC 2385, TCP_MD5SIG), the
//! source address, and the TTL (1 for a directly connected external peer, 255 with
//! ebgpMultiHop and for internal peers, as BIRD and FRR default to).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::sockopt::set_option;

/// The longest key TCP_MD5SIG takes (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_PASSWORD_LEN: usize = 80;

/// How one session's connection is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub peer: SocketAddr,
    pub source: Option<IpAddr>,
    /// TCP MD5 key; empty is no signature.
    pub password: Vec<u8>,
    /// IP TTL / IPv6 hop limit of every packet of the connection.
    pub ttl: u8,
    pub timeout: Duration,
}

/// `struct __kernel_sockaddr_storage`: 128 bytes, 8-aligned.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// The peer as the kernel's `sockaddr_in` / `sockaddr_in6` with port 0, in the storage's bytes.
fn sockaddr_bytes(peer: IpAddr) -> SockaddrStorage {
    let mut bytes = [0u8; 128];
    match peer {
        IpAddr::V4(v4) => {
            bytes[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            // sin_port 0 at 2..4, then sin_addr.
            bytes[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            bytes[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            // sin6_port 0 at 2..4, sin6_flowinfo 0 at 4..8, then sin6_addr.
            bytes[8..24].copy_from_slice(&v6.octets());
        }
    }
    SockaddrStorage(bytes)
}

/// `struct tcp_md5sig` of linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    address: SockaddrStorage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    if_index: libc::c_int,
    key: [u8; MAX_PASSWORD_LEN],
}

fn md5_option(peer: SocketAddr, password: &[u8]) -> io::Result<TcpMd5Sig> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the TCP MD5 password is {} bytes; at most {MAX_PASSWORD_LEN} are possible",
                password.len()
            ),
        ));
    }
    let mut option = TcpMd5Sig {
        address: sockaddr_bytes(peer.ip()),
        flags: 0,
        prefix_len: 0,
        key_len: u16::try_from(password.len()).unwrap_or(0),
        if_index: 0,
        key: [0; MAX_PASSWORD_LEN],
    };
    option.key[..password.len()].copy_from_slice(password);
    Ok(option)
}

/// A socket ready to connect, with every option of `config` set.
fn prepare(config: &ConnectionConfig) -> io::Result<Socket> {
    let domain = Domain::for_address(config.peer);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match config.peer {
        SocketAddr::V4(_) => socket.set_ttl_v4(u32::from(config.ttl))?,
        SocketAddr::V6(_) => socket.set_unicast_hops_v6(u32::from(config.ttl))?,
    }
    if !config.password.is_empty() {
        let option = md5_option(config.peer, &config.password)?;
        set_option(&socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &option)?;
    }
    if let Some(source) = config.source {
        // Bound before the session exists: the address may be added to the node a moment later.
        socket.set_freebind_v4(true).ok();
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    }
    Ok(socket)
}

/// Connects within the timeout.
pub async fn connect(config: &ConnectionConfig) -> io::Result<TcpStream> {
    let socket = TcpSocket::from_std_stream(prepare(config)?.into());
    match tokio::time::timeout(config.timeout, socket.connect(config.peer)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", config.timeout.as_secs_f32()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_longer_than_the_kernel_takes_is_refused() {
        let peer: SocketAddr = "198.51.100.1:179".parse().unwrap();
        assert!(md5_option(peer, &[b'x'; 81]).is_err());
        let option = md5_option(peer, b"secret").unwrap();
        assert_eq!(option.key_len, 6);
        assert_eq!(&option.key[..6], b"secret");
        assert_eq!(&option.address.0[4..8], &[198, 51, 100, 1]);
        assert_eq!(
            std::mem::size_of::<TcpMd5Sig>(),
            216,
            "as linux/tcp.h lays it out"
        );
    }

    #[tokio::test]
    async fn connects_with_a_password_to_a_listener_that_has_none() {
        // Linux signs only when a key is set on both ends for the address; a listener without
        // one drops signed segments, so the connect times out rather than succeeding unsigned.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let plain = ConnectionConfig {
            peer,
            source: None,
            password: Vec::new(),
            ttl: 64,
            timeout: Duration::from_secs(2),
        };
        connect(&plain).await.unwrap();
        let signed = ConnectionConfig {
            password: b"secret".to_vec(),
            timeout: Duration::from_millis(300),
            ..plain
        };
        let error = connect(&signed).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
