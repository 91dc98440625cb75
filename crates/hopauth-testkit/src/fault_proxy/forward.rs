//! One proxied connection: the two pumps, stalls, triggers and resets, and the bookkeeping of open connections.

use super::*;

/// Decrements `open` when the connection's task ends, however it ends.
pub(super) struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a pump ended.
pub(super) enum End {
    /// The reading side closed (or failed): close the connection normally.
    Closed,
    /// A trigger fired: reset.
    Reset,
}

pub(super) async fn serve(shared: Arc<Shared>, mut client: TcpStream, id: u64) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _guard = OpenGuard(shared.clone());
    let mut faults = shared.faults.subscribe();
    let start = faults.borrow_and_update().clone();
    let reset = |s: &TcpStream| {
        let _ = s.set_zero_linger();
        shared.resets.fetch_add(1, Ordering::SeqCst);
    };
    if start.refuse {
        reset(&client);
        return;
    }
    if start.blackhole {
        // Read and discard until the client gives up or everything is reset.
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                r = client.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                changed = faults.changed() => {
                    if changed.is_err() || faults.borrow_and_update().reset_epoch != start.reset_epoch {
                        reset(&client);
                        return;
                    }
                }
            }
        }
    }
    let Ok(mut server) = TcpStream::connect(shared.target).await else {
        reset(&client);
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let epoch = start.reset_epoch;
    let end = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(&shared, id, Dir::Up, cr, sw);
        let down = pump(&shared, id, Dir::Down, sr, cw);
        let mut watch = shared.faults.subscribe();
        let reset_all = async move {
            loop {
                if watch.changed().await.is_err() || watch.borrow_and_update().reset_epoch != epoch {
                    return;
                }
            }
        };
        tokio::select! {
            // One side closing ends the connection (Redis and HTTP clients do not half-close).
            e = up => e,
            e = down => e,
            _ = reset_all => End::Reset,
        }
    };
    if let End::Reset = end {
        reset(&client);
        let _ = server.set_zero_linger();
    }
}

/// What the reader hands the writer.
pub(super) enum Item {
    Data(Instant, Vec<u8>),
    Reset(Instant),
}

/// Copies `from` → `to` with the current latency and stall, applying an armed trigger.
pub(super) async fn pump<R, W>(shared: &Shared, id: u64, dir: Dir, mut from: R, mut to: W) -> End
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    let reader = async move {
        let mut faults = shared.faults.subscribe();
        let mut carry: Vec<u8> = Vec::with_capacity(CARRY);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if wait_unstalled(&mut faults).await.is_err() {
                return;
            }
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                // A stall switched on while waiting for bytes: stop reading.
                _ = faults.changed() => continue,
            };
            let chunk = &buf[..n];
            let latency = {
                let f = faults.borrow();
                if dir == Dir::Up {
                    f.up_latency
                } else {
                    f.down_latency
                }
            };
            let due = Instant::now() + latency;
            match cut(shared, id, dir, &carry, chunk) {
                None => {
                    let _ = tx.send(Item::Data(due, chunk.to_vec()));
                }
                Some(keep) => {
                    let _ = tx.send(Item::Data(due, chunk[..keep].to_vec()));
                    let _ = tx.send(Item::Reset(due));
                    // Nothing more is read; the writer ends the connection.
                    std::future::pending::<()>().await;
                }
            }
            carry.extend_from_slice(chunk);
            if carry.len() > CARRY {
                carry.drain(..carry.len() - CARRY);
            }
        }
    };
    let writer = async {
        let mut faults = shared.faults.subscribe();
        while let Some(item) = rx.recv().await {
            let (due, data) = match item {
                Item::Data(due, data) => (due, Some(data)),
                Item::Reset(due) => (due, None),
            };
            tokio::time::sleep_until(due).await;
            if wait_unstalled(&mut faults).await.is_err() {
                return End::Closed;
            }
            let Some(data) = data else { return End::Reset };
            if data.is_empty() {
                continue;
            }
            if to.write_all(&data).await.is_err() {
                return End::Closed;
            }
        }
        End::Closed
    };
    tokio::pin!(writer);
    tokio::select! {
        // The read side closed (dropping `tx`): the writer drains what was queued, then ends.
        _ = reader => (&mut writer).await,
        e = &mut writer => e,
    }
}

/// Waits while the proxy is stalled; `Err` once the proxy is gone.
pub(super) async fn wait_unstalled(faults: &mut watch::Receiver<Faults>) -> Result<(), ()> {
    while faults.borrow_and_update().stalled {
        faults.changed().await.map_err(|_| ())?;
    }
    Ok(())
}

/// If the armed trigger fires on this chunk, how many of its bytes to forward first.
pub(super) fn cut(shared: &Shared, id: u64, dir: Dir, carry: &[u8], chunk: &[u8]) -> Option<usize> {
    let mut slot = shared.armed.lock().unwrap();
    let armed = slot.as_mut()?;
    if armed.trigger.dir != dir || armed.claimed_by.is_some_and(|c| c != id) {
        return None;
    }
    let keep = if armed.claimed_by.is_some() {
        // Counting down on this connection after an earlier chunk.
        if chunk.len() < armed.remaining {
            armed.remaining -= chunk.len();
            return None;
        }
        armed.remaining
    } else {
        match &armed.trigger.pattern {
            None => {
                armed.claimed_by = Some(id);
                if chunk.len() < armed.remaining {
                    armed.remaining -= chunk.len();
                    return None;
                }
                armed.remaining
            }
            Some(pattern) => {
                let mut hay = carry.to_vec();
                hay.extend_from_slice(chunk);
                let at = hay.windows(pattern.len()).position(|w| w == pattern.as_slice())?;
                // The pattern's start, as an offset into this chunk (it may begin in `carry`).
                let start = at as isize - carry.len() as isize;
                let end = start + armed.trigger.after as isize;
                if end > chunk.len() as isize {
                    armed.claimed_by = Some(id);
                    armed.remaining = (end - chunk.len() as isize) as usize;
                    return None;
                }
                end.max(0) as usize
            }
        }
    };
    *slot = None;
    shared.fired.fetch_add(1, Ordering::SeqCst);
    Some(keep)
}
