//! The fault proxy of tests/support/fault_proxy.rs against a real TCP echo server: each
//! switch does what its doc says, so fault tests built on it test hopauth, not the proxy.

use hopauth_testkit::fault_proxy;

use std::net::SocketAddr;
use std::time::Duration;

use fault_proxy::{Dir, FaultProxy, Trigger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A loopback echo server: writes back every byte it reads.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads until `want` bytes or the stream ends/fails; the bytes and whether it was reset.
async fn read_n(s: &mut TcpStream, want: usize, within: Duration) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    while out.len() < want {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return (out, Some(std::io::ErrorKind::TimedOut)),
            Ok(Ok(0)) => return (out, Some(std::io::ErrorKind::UnexpectedEof)),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (out, Some(e.kind())),
        }
    }
    (out, None)
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn forwards_both_ways_and_counts_connections() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut s, 5, Duration::from_secs(5)).await, (b"hello".to_vec(), None));
    assert_eq!((proxy.accepted(), proxy.open()), (1, 1));
    drop(s);
    wait_for("the connection to close", || proxy.open() == 0).await;
    assert_eq!((proxy.accepted(), proxy.resets()), (1, 0));
}

#[tokio::test]
async fn latency_is_added_per_direction() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.set_latency(Dir::Up, Duration::from_millis(150));
    proxy.set_latency(Dir::Down, Duration::from_millis(100));
    let t = Instant::now();
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.0, b"ping");
    assert!(t.elapsed() >= Duration::from_millis(250), "{:?}", t.elapsed());
    proxy.heal();
    let t = Instant::now();
    s.write_all(b"pong").await.unwrap();
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await.0, b"pong");
    assert!(t.elapsed() < Duration::from_millis(250), "latency stays after heal: {:?}", t.elapsed());
}

#[tokio::test]
async fn reset_all_sends_rst_to_open_connections_only() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut a = TcpStream::connect(proxy.addr).await.unwrap();
    a.write_all(b"x").await.unwrap();
    read_n(&mut a, 1, Duration::from_secs(5)).await;
    proxy.reset_all();
    let (_, err) = read_n(&mut a, 1, Duration::from_secs(5)).await;
    assert_eq!(err, Some(std::io::ErrorKind::ConnectionReset));
    assert_eq!(proxy.resets(), 1);
    // A connection made afterwards is not affected.
    let mut b = TcpStream::connect(proxy.addr).await.unwrap();
    b.write_all(b"ok").await.unwrap();
    assert_eq!(read_n(&mut b, 2, Duration::from_secs(5)).await, (b"ok".to_vec(), None));
}

#[tokio::test]
async fn a_pattern_trigger_cuts_before_the_pattern_even_across_reads() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.arm(Trigger::on(Dir::Up, b"SCAN"));
    s.write_all(b"GET a SC").await.unwrap();
    assert_eq!(read_n(&mut s, 8, Duration::from_secs(5)).await.0, b"GET a SC");
    assert!(proxy.armed());
    s.write_all(b"AN 0 more").await.unwrap();
    let (got, err) = read_n(&mut s, 1, Duration::from_secs(5)).await;
    assert_eq!((got, err), (vec![], Some(std::io::ErrorKind::ConnectionReset)));
    assert_eq!((proxy.fired(), proxy.armed()), (1, false));
}

#[tokio::test]
async fn a_down_trigger_forwards_part_of_a_reply_then_resets() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut other = TcpStream::connect(proxy.addr).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.arm(Trigger::on(Dir::Down, b"invalidate").after(4));
    s.write_all(b">2 invalidate key").await.unwrap();
    let (got, err) = read_n(&mut s, 17, Duration::from_secs(5)).await;
    assert_eq!(got, b">2 inva");
    assert_eq!(err, Some(std::io::ErrorKind::ConnectionReset));
    // Only the connection that carried the pattern is reset.
    other.write_all(b"invalidate").await.unwrap();
    assert_eq!(read_n(&mut other, 10, Duration::from_secs(5)).await, (b"invalidate".to_vec(), None));

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.arm(Trigger::after_bytes(Dir::Down, 6));
    s.write_all(b"abc").await.unwrap();
    assert_eq!(read_n(&mut s, 3, Duration::from_secs(5)).await, (b"abc".to_vec(), None));
    s.write_all(b"defghi").await.unwrap();
    let (got, err) = read_n(&mut s, 6, Duration::from_secs(5)).await;
    assert_eq!((got.as_slice(), err), (&b"def"[..], Some(std::io::ErrorKind::ConnectionReset)));
    assert_eq!(proxy.fired(), 2);
}

#[tokio::test]
async fn stalled_connections_stay_open_and_resume_on_heal() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.set_stalled(true);
    s.write_all(b"held").await.unwrap();
    let (got, err) = read_n(&mut s, 4, Duration::from_millis(300)).await;
    assert_eq!((got, err), (vec![], Some(std::io::ErrorKind::TimedOut)));
    assert_eq!(proxy.open(), 1);
    proxy.heal();
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await, (b"held".to_vec(), None));
}

#[tokio::test]
async fn blackholed_connections_hang_and_refused_ones_are_reset() {
    let proxy = FaultProxy::start(echo_server().await).await;
    proxy.set_blackhole(true);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"hello?").await.unwrap();
    let (got, err) = read_n(&mut s, 1, Duration::from_millis(300)).await;
    assert_eq!((got, err), (vec![], Some(std::io::ErrorKind::TimedOut)));
    assert_eq!(proxy.open(), 1);
    drop(s);
    wait_for("the hung connection to close", || proxy.open() == 0).await;

    proxy.heal();
    proxy.set_refuse(true);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let (_, err) = read_n(&mut s, 1, Duration::from_secs(5)).await;
    assert!(matches!(err, Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof)), "{err:?}");
    assert_eq!(proxy.accepted(), 2);
    proxy.heal();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"back").await.unwrap();
    assert_eq!(read_n(&mut s, 4, Duration::from_secs(5)).await, (b"back".to_vec(), None));
}

#[tokio::test]
async fn latency_delays_each_chunk_without_capping_throughput_or_reordering() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.set_latency(Dir::Down, Duration::from_millis(200));
    let t = Instant::now();
    for i in 0..5u8 {
        s.write_all(&[b'a' + i]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (got, err) = read_n(&mut s, 5, Duration::from_secs(5)).await;
    assert_eq!((got.as_slice(), err), (&b"abcde"[..], None));
    // Five chunks at 200 ms each would take a second if the delay were serial.
    assert!(t.elapsed() >= Duration::from_millis(200) && t.elapsed() < Duration::from_millis(800), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_pattern_trigger_may_forward_bytes_past_the_read_it_was_found_in() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.arm(Trigger::on(Dir::Down, b"KEY").after(6));
    s.write_all(b"..KEY").await.unwrap();
    assert_eq!(read_n(&mut s, 5, Duration::from_secs(5)).await, (b"..KEY".to_vec(), None));
    assert!(proxy.armed(), "3 of the 6 bytes are still to come");
    s.write_all(b"12345").await.unwrap();
    let (got, err) = read_n(&mut s, 5, Duration::from_secs(5)).await;
    assert_eq!((got.as_slice(), err), (&b"123"[..], Some(std::io::ErrorKind::ConnectionReset)));
    assert_eq!(proxy.fired(), 1);
}
