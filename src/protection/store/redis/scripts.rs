//! The server-side Lua scripts of [`RedisStore`](super::RedisStore), as
//! text (for review, and for tools that run them on their own): each runs
//! atomically on the Redis server and reads the time with `TIME`, the one
//! clock of the fleet. Every
//! number is passed and stored as a decimal string (`%d`): Lua 5.1 turns a
//! number into text with 14 digits, which would round a time in
//! microseconds.
//!
//! Each script touches the keys of one endpoint only (one hash tag, so one
//! cluster slot), or the fleet's own keys (another tag).

use std::sync::LazyLock;

use redis::Script;

/// The fleet's GCRA, the rule of [`RateLimitState`](crate::protection::RateLimitState)
/// with a cost: the request takes `cost` turns at once and is sent at the
/// last of them, and the schedule moves `cost` intervals on.
///
/// `KEYS[1]`: the limit's theoretical arrival time (µs of the server's
/// clock). `ARGV`: interval (µs), tolerance (`(burst - 1)` intervals, µs),
/// cost, max wait (µs).
///
/// Returns `{1, now, at, tat}` for a turn at `at` (now, or a reservation
/// within the max wait), or `{0, now, wait, tat}` for a refusal that takes
/// nothing. The key expires when its time has passed: a missing key and a
/// time in the past give the same answers.
pub const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local base = math.max(tat, now)
local at = math.max(now, base + (cost - 1) * interval - tolerance)
if at - now > max_wait then
  return {0, now, at - now, base}
end
local after = base + cost * interval
redis.call('SET', KEYS[1], string.format('%d', after),
  'PXAT', string.format('%d', math.floor(after / 1000) + 1))
return {1, now, at, after}
"#;

/// Gives back a turn from [`ACQUIRE`] that will not be used: if it is still
/// the last one of the schedule (the time is the one that acquire set), the
/// schedule moves back by its cost; otherwise nothing changes (the turn is
/// lost to the fleet, and the limit holds either way).
///
/// `KEYS[1]`: as for [`ACQUIRE`]. `ARGV`: the time acquire set (µs), cost ×
/// interval (µs). Returns 1 if it came off, 0 if not.
pub const RELEASE: &str = r#"
local tat = redis.call('GET', KEYS[1])
if not tat or tonumber(tat) ~= tonumber(ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local before = tonumber(tat) - tonumber(ARGV[2])
if before <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', before),
    'PXAT', string.format('%d', math.floor(before / 1000) + 1))
end
return 1
"#;

/// A server quota hold, set only if later: the hold of one credential
/// partition ends `wait` ms after the server's now, unless it already ends
/// later. The endpoint's holds are one sorted set (partition → end, in ms
/// of the server's clock) that expires at the latest end; holds that are
/// over are dropped on every write, and at most `max` are kept (the one
/// that ends first gives way, as in the in-memory store). A hold that is
/// set is published on the fleet's channel.
///
/// `KEYS[1]`: the endpoint's holds. `ARGV`: partition (hex), wait (ms), max,
/// channel, endpoint tag. Returns `{1, now, until}` if set, `{0, now,
/// until}` with the later hold that was kept otherwise.
pub const HOLD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= untl then
  return {0, now, tonumber(cur)}
end
local max = tonumber(ARGV[3])
if not cur then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= max then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max)
  end
end
redis.call('ZADD', KEYS[1], string.format('%d', untl), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PUBLISH', ARGV[4],
  'hold ' .. ARGV[5] .. ' ' .. ARGV[1] .. ' ' .. string.format('%d', untl))
return {1, now, untl}
"#;

/// The breaker's "open until" hint, set only if later, expiring at its end
/// and published on the fleet's channel.
///
/// `KEYS[1]`: the endpoint's hint. `ARGV`: wait (ms), channel, endpoint
/// tag. Returns as [`HOLD`].
pub const OPEN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur >= untl then
  return {0, now, cur}
end
redis.call('SET', KEYS[1], string.format('%d', untl), 'PXAT', string.format('%d', untl))
redis.call('PUBLISH', ARGV[2], 'open ' .. ARGV[3] .. ' - ' .. string.format('%d', untl))
return {1, now, untl}
"#;

/// The fleet's index of endpoints with a hold or an open hint, so that a
/// process that (re)connects finds them: endpoint tag → the latest end,
/// set only if later, ends that are over dropped, at most `max` kept,
/// expiring at the latest end.
///
/// `KEYS[1]`: the index. `ARGV`: endpoint tag, until (ms), max.
pub const INDEX: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
local cur = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[3])
if n > max then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], last[2])
end
return now
"#;

/// What the fleet knows of one endpoint: its holds that last beyond now
/// and its open hint. `KEYS`: the endpoint's holds, its hint. Returns
/// `{now, open_until (0 for none), partition, until, partition, until, ...}`,
/// all as decimal text.
pub const SNAPSHOT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {string.format('%d', now), redis.call('GET', KEYS[2]) or '0'}
local holds = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf', 'WITHSCORES')
for i = 1, #holds, 2 do
  out[#out + 1] = holds[i]
  out[#out + 1] = holds[i + 1]
end
return out
"#;

/// The shared retry budget, the rule of [`Tokens`](crate::protection::Tokens):
/// deposits first (capped at the capacity), then a withdrawal if there are
/// enough tokens. A full bucket is a missing key (nothing is left behind);
/// otherwise the key expires after `ttl` ms without a change (an idle
/// fleet's budget refills).
///
/// `KEYS[1]`: the bucket. `ARGV`: capacity, deposit, withdrawal (0 for
/// none), ttl (ms). Returns `{paid (1 or 0), tokens left}`.
pub const BUDGET: &str = r#"
local cap = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if cur > cap then cur = cap end
cur = math.min(cap, cur + tonumber(ARGV[2]))
local paid = 1
local w = tonumber(ARGV[3])
if w > 0 then
  if cur >= w then cur = cur - w else paid = 0 end
end
if cur >= cap then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', cur), 'PX', ARGV[4])
end
return {paid, cur}
"#;

/// A process's heartbeat: it is live for `ttl` ms, processes not heard of
/// for longer are dropped, and the fleet's key for credential partitions
/// is read, or set to the candidate if there is none (set once: the first
/// process wins, and a process that comes back after a restart of Redis
/// puts the key the fleet used back).
///
/// `KEYS`: the members, the partition key. `ARGV`: process id, ttl (ms),
/// candidate key, the key's ttl (ms). Returns `{now (ms), live processes,
/// key}`.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - ttl))
redis.call('PEXPIRE', KEYS[1], ttl)
local n = redis.call('ZCARD', KEYS[1])
local key = redis.call('GET', KEYS[2])
if not key then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  key = ARGV[3]
else
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {now, n, key}
"#;

/// A process leaving the fleet. `KEYS[1]`: the members. `ARGV[1]`: its id.
pub const LEAVE: &str = r#"
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

macro_rules! scripts {
    ($($name:ident = $src:ident;)*) => {
        /// The scripts, hashed once (invoked by `EVALSHA`, loaded on a
        /// `NOSCRIPT` answer: after a restart of Redis).
        pub(crate) struct Scripts {
            $(pub(crate) $name: Script,)*
        }
        pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
            $($name: Script::new($src),)*
        });
    };
}

scripts! {
    acquire = ACQUIRE;
    release = RELEASE;
    hold = HOLD;
    open = OPEN;
    index = INDEX;
    snapshot = SNAPSHOT;
    budget = BUDGET;
    heartbeat = HEARTBEAT;
    leave = LEAVE;
}
