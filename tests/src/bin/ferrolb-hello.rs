//! A tiny HTTP server for end-to-end tests: answers every request with its own name, so a client
//! can tell which node its traffic reached. Stands in for a Service's backend behind the
//! kube-proxy emulation of a test node.
//!
//! Usage: ferrolb-hello <listen address, e.g. [::]:8080> <name>

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

fn answer(stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    // Read the request head; the body (if any) is ignored.
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("{name}\n");
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(name)) = (args.next(), args.next()) else {
        eprintln!("usage: ferrolb-hello <listen address> <name>");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(&address) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("ferrolb-hello: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    for stream in listener.incoming().flatten() {
        if let Err(error) = answer(stream, &name) {
            eprintln!("ferrolb-hello: {error}");
        }
    }
    ExitCode::SUCCESS
}
