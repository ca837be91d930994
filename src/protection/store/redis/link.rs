//! The connection to Redis: requests' calls (bounded by the call timeout,
//! switching the store to local decisions on a failure), and the
//! background task that keeps the process in the fleet (heartbeats,
//! refunds, the subscription, the holds it missed) and brings the store
//! back when Redis answers again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, ScriptInvocation};

use super::endpoint::{BUDGET_IDLE, MAX_INDEX, noted};
use super::error::describe;
use super::keys::EndpointKeys;
use super::scripts::SCRIPTS;
use super::view::now;
use super::{FleetKey, HoldSync, Inner};
use crate::protection::store::MAX_HOLDS;

type Conn = MultiplexedConnection;

/// How long the fleet's partition key outlives the last heartbeat: 25
/// hours, longer than any hold (`max_quota_reset` is 24 h by default).
const PARTITION_KEY_TTL: Duration = Duration::from_secs(25 * 3600);

/// Runs `future` within `timeout`, describing a failure without anything
/// from the URL.
async fn timed<T>(
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("timed out".into()),
    }
}

async fn invoke<T: FromRedisValue>(
    conn: &mut Conn,
    call: &ScriptInvocation<'_>,
    timeout: Duration,
) -> Result<T, String> {
    timed(timeout, call.invoke_async(conn)).await
}

impl Inner {
    /// A request's call to Redis: its answer, when it was sent and when it
    /// came; `None` if the store decides locally now, or the call failed
    /// or timed out (the store then decides locally until the background
    /// task reaches Redis again).
    pub(crate) async fn call<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Option<(T, Instant, Instant)> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        let sent = now();
        match invoke(&mut conn, call, self.settings.call_timeout).await {
            Ok(v) => Some((v, sent, now())),
            Err(reason) => {
                self.went_local(&reason);
                None
            }
        }
    }
}

/// The first connection: connects and joins the fleet.
pub(crate) async fn start(inner: &Arc<Inner>) -> Result<(), String> {
    let mut conn = connect(inner).await?;
    join(inner, &mut conn).await?;
    *inner.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    inner.came_back();
    Ok(())
}

async fn connect(inner: &Inner) -> Result<Conn, String> {
    let timeout = inner.settings.connect_timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    timed(
        timeout,
        inner
            .client
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await
}

/// Joins the fleet on a new connection: a heartbeat (the partition key and
/// the clock), the subscription, the holds set meanwhile, the holds noted
/// here meanwhile, the refunds noted meanwhile.
async fn join(inner: &Arc<Inner>, conn: &mut Conn) -> Result<(), String> {
    let timeout = inner.settings.connect_timeout;
    heartbeat(inner, conn, timeout).await?;
    if inner.settings.hold_sync == HoldSync::Subscribe {
        subscribe(inner).await?;
    }
    resync(inner, conn, timeout).await?;
    reshare(inner, conn, timeout).await?;
    flush(inner, conn, timeout).await
}

/// Says this process is live; reads the fleet's size, the partition key
/// and the server's time.
async fn heartbeat(inner: &Inner, conn: &mut Conn, timeout: Duration) -> Result<(), String> {
    let candidate = inner.fleet_key().unwrap_or_else(FleetKey::random).to_hex();
    let live = inner.settings.heartbeat.saturating_mul(3).as_millis() as u64;
    let mut call = SCRIPTS.heartbeat.prepare_invoke();
    call.key(&inner.keys.members)
        .key(&inner.keys.partition_key)
        .arg(&inner.process)
        .arg(live.max(1))
        .arg(candidate)
        .arg(PARTITION_KEY_TTL.as_millis() as u64);
    let sent = now();
    let (server_ms, live, key): (i64, i64, String) = invoke(conn, &call, timeout).await?;
    inner.clock.observe(sent, now(), server_ms);
    inner
        .members
        .store(usize::try_from(live).unwrap_or(1).max(1), Ordering::Relaxed);
    // A key that is not ours (another process's format, or written by
    // hand) still gives every process the same partitions: hashed.
    let key = FleetKey::from_hex(&key).unwrap_or_else(|| FleetKey::derive(&key));
    let mut slot = inner
        .fleet_key
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if *slot != Some(key) {
        // Holds noted under another key belong to partitions that no
        // request will have again.
        if slot.is_some() || inner.view.holding(server_ms) {
            inner.view.forget_holds();
        }
        *slot = Some(key);
    }
    Ok(())
}

/// Subscribes to the fleet's channel on a connection of its own, read by
/// a task of its own (which replaces the previous one).
async fn subscribe(inner: &Arc<Inner>) -> Result<(), String> {
    let timeout = inner.settings.connect_timeout;
    let mut pubsub = timed(timeout, inner.client.get_async_pubsub()).await?;
    timed(timeout, pubsub.subscribe(&inner.keys.channel)).await?;
    let stream = pubsub.into_on_message();
    let task = tokio::spawn(listen(Arc::downgrade(inner), stream));
    let old = inner
        .listener
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(task.abort_handle());
    if let Some(old) = old {
        old.abort();
    }
    inner.subscribed.store(true, Ordering::Release);
    Ok(())
}

/// Applies what the fleet publishes to the local view, until the
/// subscription ends (then the background task is woken to renew it).
async fn listen(inner: Weak<Inner>, mut stream: redis::aio::PubSubStream) {
    while let Some(message) = stream.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.apply(message.get_payload_bytes());
    }
    if let Some(inner) = inner.upgrade() {
        inner.subscribed.store(false, Ordering::Release);
        inner.wake.notify_one();
    }
}

impl Inner {
    /// One published event: `hold <tag> <partition> <until>` or `open
    /// <tag> - <until>`. Anything else is ignored.
    pub(crate) fn apply(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut words = text.split_ascii_whitespace();
        let (Some(kind), Some(tag), Some(partition), Some(until), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return;
        };
        let Ok(until) = until.parse::<i64>() else {
            return;
        };
        let view = self.view.endpoint(tag);
        match kind {
            "hold" => {
                if let Ok(id) = u64::from_str_radix(partition, 16) {
                    let now = self.clock.server_ms(now());
                    self.view.note_hold(&view, id, until, true, now);
                }
            }
            "open" => {
                view.note_open(until, true);
            }
            _ => {}
        }
    }
}

/// Reads every hold and hint the fleet has (the index, then each
/// endpoint's): what a process missed while it was not subscribed.
async fn resync(inner: &Inner, conn: &mut Conn, timeout: Duration) -> Result<(), String> {
    let since = inner.clock.server_ms(now());
    let tags: Vec<String> = timed(
        timeout,
        redis::cmd("ZRANGEBYSCORE")
            .arg(&inner.keys.index)
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_INDEX)
            .query_async(conn),
    )
    .await?;
    for tag in tags {
        let keys = EndpointKeys::new(&inner.settings.prefix, tag);
        let mut call = SCRIPTS.snapshot.prepare_invoke();
        call.key(&keys.holds).key(&keys.open);
        let out: Vec<String> = invoke(conn, &call, timeout).await?;
        let number = |i: usize| out.get(i).and_then(|v| v.parse::<i64>().ok());
        let (Some(server_now), Some(open)) = (number(0), number(1)) else {
            continue;
        };
        let view = inner.view.endpoint(&keys.tag);
        if open > server_now {
            view.note_open(open, true);
        }
        for pair in out[2..].chunks_exact(2) {
            if let (Ok(id), Ok(until)) = (u64::from_str_radix(&pair[0], 16), pair[1].parse()) {
                inner.view.note_hold(&view, id, until, true, server_now);
            }
        }
    }
    Ok(())
}

/// Shares the holds (and hints) this process noted while Redis could not
/// answer.
async fn reshare(inner: &Inner, conn: &mut Conn, timeout: Duration) -> Result<(), String> {
    let server_now = inner.clock.server_ms(now());
    for (tag, view) in inner.view.all() {
        let keys = EndpointKeys::new(&inner.settings.prefix, tag);
        let mut latest = None;
        for (id, until) in view.unshared(server_now) {
            let mut call = SCRIPTS.hold.key(&keys.holds);
            call.arg(format!("{id:016x}"))
                .arg((until - server_now).max(1))
                .arg(MAX_HOLDS)
                .arg(&inner.keys.channel)
                .arg(&keys.tag);
            let (_, _, until): (i64, i64, i64) = invoke(conn, &call, timeout).await?;
            view.mark_shared(id);
            latest = latest.max(Some(until));
        }
        if inner.settings.share_open
            && let Some(until) = view.unshared_open(server_now)
        {
            let mut call = SCRIPTS.open.key(&keys.open);
            call.arg((until - server_now).max(1))
                .arg(&inner.keys.channel)
                .arg(&keys.tag);
            let (_, _, until): (i64, i64, i64) = invoke(conn, &call, timeout).await?;
            view.note_open(until, true);
            latest = latest.max(Some(until));
        }
        if let Some(until) = latest {
            let mut call = SCRIPTS.index.key(&inner.keys.index);
            call.arg(&keys.tag).arg(until).arg(MAX_INDEX);
            invoke::<i64>(conn, &call, timeout).await?;
        }
    }
    Ok(())
}

/// Sends the refunds noted for shared budgets.
async fn flush(inner: &Inner, conn: &mut Conn, timeout: Duration) -> Result<(), String> {
    if !inner.settings.shared_budget {
        return Ok(());
    }
    let endpoints: Vec<_> = inner
        .endpoints
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    for shared in endpoints {
        let budget = *shared.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(budget) = budget else {
            continue;
        };
        let pending = shared.pending.swap(0, Ordering::AcqRel);
        if pending == 0 {
            continue;
        }
        let mut call = SCRIPTS.budget.key(&shared.keys.budget);
        call.arg(budget.capacity())
            .arg(pending)
            .arg(0)
            .arg(BUDGET_IDLE.as_millis() as u64);
        match invoke::<(i64, i64)>(conn, &call, timeout).await {
            Ok((_, left)) => noted(&shared, &inner.draining, &budget, left),
            Err(e) => {
                shared.pending.fetch_add(pending, Ordering::AcqRel);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Starts the background task; it ends when the store is dropped.
pub(crate) fn spawn(inner: &Arc<Inner>) {
    let task = tokio::spawn(run(Arc::downgrade(inner), inner.wake.clone()));
    inner
        .tasks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(task.abort_handle());
}

/// When the background task last did each of its jobs.
struct Due {
    heartbeat: Instant,
    poll: Instant,
}

async fn run(inner: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    let mut due = Due {
        heartbeat: now(),
        poll: now(),
    };
    loop {
        let Some(store) = inner.upgrade() else {
            return;
        };
        let s = &store.settings;
        let mut pause = match s.hold_sync {
            HoldSync::Poll(every) => s.heartbeat.min(every),
            HoldSync::Subscribe => s.heartbeat,
        };
        if store.up.load(Ordering::Acquire) {
            if let Err(reason) = tick(&store, &mut due).await {
                store.went_local(&reason);
            }
        } else {
            match reconnect(&store).await {
                Ok(()) => {
                    due = Due {
                        heartbeat: now(),
                        poll: now(),
                    };
                    store.came_back();
                }
                Err(_) => pause = s.retry_interval,
            }
        }
        drop(store);
        let _ = tokio::time::timeout(pause, wake.notified()).await;
    }
}

/// The background task's round while Redis answers.
async fn tick(inner: &Arc<Inner>, due: &mut Due) -> Result<(), String> {
    let conn = inner
        .conn
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(mut conn) = conn else {
        return Ok(());
    };
    let timeout = inner.settings.call_timeout;
    let t = now();
    if t.saturating_duration_since(due.heartbeat) >= inner.settings.heartbeat {
        due.heartbeat = t;
        heartbeat(inner, &mut conn, timeout).await?;
        reshare(inner, &mut conn, timeout).await?;
        flush(inner, &mut conn, timeout).await?;
    }
    match inner.settings.hold_sync {
        HoldSync::Subscribe if !inner.subscribed.load(Ordering::Acquire) => {
            subscribe(inner).await?;
            resync(inner, &mut conn, inner.settings.connect_timeout).await?;
        }
        HoldSync::Poll(every) if t.saturating_duration_since(due.poll) >= every => {
            due.poll = t;
            resync(inner, &mut conn, timeout).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn reconnect(inner: &Arc<Inner>) -> Result<(), String> {
    let mut conn = connect(inner).await?;
    join(inner, &mut conn).await?;
    *inner.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    Ok(())
}
