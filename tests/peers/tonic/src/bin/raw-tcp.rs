//! `raw-tcp`: what one plain TCP connection carries over loopback, the
//! yardstick beside the benchmark's 1 MiB gRPC rows. No gRPC, no HTTP/2, no
//! async runtime: the standard library's blocking sockets.
//!
//! ```text
//! raw-tcp --listen --port N [--host H]           # the reader
//! raw-tcp --port N [--host H] [--duration S] [--write_size BYTES]   # the writer
//! ```
//!
//! The reader accepts connections (a thread each), reads into a buffer of
//! 1 MiB and discards what it read; at the end of the stream it writes back
//! how many bytes it read (8 bytes, big-endian) and closes. It runs until
//! killed and prints nothing but errors.
//!
//! The writer opens one connection and writes the same buffer of
//! `--write_size` bytes (default 1 MiB) in a loop for a 0.5 s warm-up and
//! then `--duration` seconds (default 3), counting the bytes of the writes
//! that started and ended inside the measured window (as `bench` counts
//! calls). Then it closes its side, checks that the reader received every
//! byte it wrote, and prints
//!
//! ```text
//! RESULT raw_tcp write_size=1048576 bytes=.. seconds=.. mib_per_sec=..
//! ```
//!
//! In a steady stream the bytes still in the socket buffers when the window
//! closes match those in them when it opened, so the writer's count is the
//! reader's. Exits 1 on a socket error or a short count, 2 on bad flags.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: raw-tcp --listen --port N [--host H] | \
    raw-tcp --port N [--host H] [--duration SECONDS] [--write_size BYTES]";

/// Not recorded, as `bench`'s warm-up.
const WARM_UP: Duration = Duration::from_millis(500);

/// The reader's buffer.
const READ_SIZE: usize = 1 << 20;

struct Args {
    listen: bool,
    host: String,
    port: u16,
    duration: f64,
    write_size: usize,
}

/// Parses `--flag value` and `--flag=value`; `None` means `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        listen: false,
        host: "127.0.0.1".into(),
        port: 0,
        duration: 3.0,
        write_size: 1 << 20,
    };
    let mut port = None;
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => {
                args.listen = true;
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(value) => value,
            None => iter.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        let bad = |e: &dyn std::fmt::Display| format!("bad {flag} {value:?}: {e}");
        match flag.as_str() {
            "--host" => args.host = value,
            "--port" => port = Some(value.parse().map_err(|e| bad(&e))?),
            "--duration" => args.duration = value.parse().map_err(|e| bad(&e))?,
            "--write_size" => args.write_size = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.port = port.ok_or("--port is required")?;
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err(format!("bad --duration {}", args.duration));
    }
    if args.write_size == 0 {
        return Err("--write_size must be at least 1".into());
    }
    Ok(Some(args))
}

/// The reader's side of one connection: read and discard to the end, then
/// report the count.
fn drain(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buffer = vec![0u8; READ_SIZE];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buffer)? {
            0 => break,
            n => total += n as u64,
        }
    }
    stream.write_all(&total.to_be_bytes())?;
    stream.shutdown(Shutdown::Write)
}

fn listen(args: &Args) -> Result<(), String> {
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    for stream in listener.incoming() {
        let stream = stream.map_err(|e| format!("accept: {e}"))?;
        std::thread::spawn(move || {
            if let Err(e) = drain(stream) {
                eprintln!("raw-tcp: reading: {e}");
            }
        });
    }
    Ok(())
}

fn write(args: &Args) -> Result<(), String> {
    let mut stream = TcpStream::connect((args.host.as_str(), args.port))
        .map_err(|e| format!("cannot connect to {}:{}: {e}", args.host, args.port))?;
    let buffer = vec![b'x'; args.write_size];
    let window = Duration::from_secs_f64(args.duration);
    let record_from = Instant::now() + WARM_UP;
    let end = record_from + window;
    let mut written: u64 = 0;
    let mut measured: u64 = 0;
    let mut now = Instant::now();
    while now < end {
        let started = now;
        stream
            .write_all(&buffer)
            .map_err(|e| format!("writing: {e}"))?;
        now = Instant::now();
        written += buffer.len() as u64;
        if started >= record_from && now <= end {
            measured += buffer.len() as u64;
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("closing: {e}"))?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .map_err(|e| format!("reading the reader's count: {e}"))?;
    let received = u64::from_be_bytes(count);
    if received != written {
        return Err(format!(
            "the reader received {received} bytes of the {written} written"
        ));
    }
    let seconds = window.as_secs_f64();
    let mib_per_sec = measured as f64 / seconds / f64::from(1u32 << 20);
    println!(
        "raw-tcp: {written} bytes written in {} B writes, all received; {measured} in the \
         {seconds:.2} s window = {mib_per_sec:.0} MiB/s",
        args.write_size
    );
    println!(
        "RESULT raw_tcp write_size={} bytes={measured} seconds={seconds:.2} \
         mib_per_sec={mib_per_sec:.0}",
        args.write_size
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("raw-tcp: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = if args.listen {
        listen(&args)
    } else {
        write(&args)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raw-tcp: {message}");
            ExitCode::FAILURE
        }
    }
}
