//! The Lua scripts: each runs atomically in Redis, so "is the lease still mine, is the generation
//! the one I read" and the write that depends on it can't be split by another instance's write.
//! Keys and arguments are documented above each script; the token hash has the fields `v` (the
//! sealed token), `fp` (its fingerprint, in the clear: it is a hash), `gen` (bumped by every
//! write and removal), `pv`/`pfp` (a staged token and its fingerprint), `removed` (set by a
//! removal, cleared by the next write: a logout is marked, not inferred from a missing `v`, so a
//! hash holding only a staged token is not read as one). A hash written before `removed` existed
//! marks a logout by `gen` without `v`; that is still read as one.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: token hash, lease. ARGV: owner, expected generation, sealed token, fingerprint,
/// channel, provider. Returns the new generation, or a negative [`Refused`] code (after a
/// logout, the holder's staged token is dropped with it).
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if gen ~= tonumber(ARGV[2]) then
  if redis.call('HEXISTS', KEYS[1], 'removed') == 1
    or (redis.call('HEXISTS', KEYS[1], 'gen') == 1 and redis.call('HEXISTS', KEYS[1], 'v') == 0) then
    redis.call('HDEL', KEYS[1], 'pv', 'pfp')
    return -3
  end
  return -2
end
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'fp', ARGV[4], 'gen', gen + 1)
redis.call('HDEL', KEYS[1], 'pv', 'pfp', 'removed')
redis.call('PUBLISH', ARGV[5], ARGV[6])
return gen + 1
",
    )
});

/// KEYS: token hash. ARGV: sealed token, fingerprint, channel, provider. An unconditional write
/// (a login): replaces the token and any staged one. Returns the new generation.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fp', ARGV[2])
redis.call('HDEL', KEYS[1], 'pv', 'pfp', 'removed')
redis.call('PUBLISH', ARGV[3], ARGV[4])
return gen
",
    )
});

/// KEYS: token hash. ARGV: channel, provider. Forgets the token and any staged one but keeps
/// (bumps) the generation, so a holder that read before the removal can't commit after it.
/// Returns 1 if there was a token.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local had = redis.call('HEXISTS', KEYS[1], 'v')
redis.call('HDEL', KEYS[1], 'v', 'fp', 'pv', 'pfp')
redis.call('HSET', KEYS[1], 'removed', 1)
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return had
",
    )
});

/// KEYS: token hash. ARGV: sealed token, fingerprint, channel, provider. Writes the token only
/// if the hash does not exist at all: Redis came back empty (restarted without persistence,
/// or failed over to a replica that had nothing). A removal keeps the hash (its `gen`), so a
/// logout is never undone by this. 1 if written.
static RESEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fp', ARGV[2], 'gen', 1)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
",
    )
});

/// KEYS: token hash. ARGV: sealed token, fingerprint. Stages a token beside the current one
/// for the next lease holder, unless a logout left its mark (`removed`; or, written before
/// that field, a generation without a token). A hash holding only a staged token (staged while
/// Redis had nothing) takes another. 1 if staged, 0 if logged out.
static STAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], 'removed') == 1
  or (redis.call('HEXISTS', KEYS[1], 'gen') == 1 and redis.call('HEXISTS', KEYS[1], 'v') == 0) then
  return 0
end
redis.call('HSET', KEYS[1], 'pv', ARGV[1], 'pfp', ARGV[2])
return 1
",
    )
});

/// KEYS: lease. ARGV: owner, TTL in ms. 1 if renewed, 0 if the lease is not ours any more.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// KEYS: lease. ARGV: owner. 1 if released, 0 if it was not ours (expired, taken by another).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

pub fn commit() -> redis::ScriptInvocation<'static> {
    COMMIT.prepare_invoke()
}

pub fn write() -> redis::ScriptInvocation<'static> {
    WRITE.prepare_invoke()
}

pub fn remove() -> redis::ScriptInvocation<'static> {
    REMOVE.prepare_invoke()
}

pub fn reseed() -> redis::ScriptInvocation<'static> {
    RESEED.prepare_invoke()
}

pub fn stage() -> redis::ScriptInvocation<'static> {
    STAGE.prepare_invoke()
}

pub fn renew() -> redis::ScriptInvocation<'static> {
    RENEW.prepare_invoke()
}

pub fn release() -> redis::ScriptInvocation<'static> {
    RELEASE.prepare_invoke()
}

/// Why a commit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The lease expired or another instance holds it now.
    LeaseLost,
    /// Another instance wrote since this holder read.
    Changed,
    /// `credproxy logout` removed the token since this holder read: the new one is dropped, as
    /// the logout asked.
    Removed,
}

impl Refused {
    pub fn from_code(code: i64) -> Result<i64, Refused> {
        match code {
            -1 => Err(Refused::LeaseLost),
            -2 => Err(Refused::Changed),
            -3 => Err(Refused::Removed),
            generation => Ok(generation),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::LeaseLost => "the lease was lost before the commit",
            Refused::Changed => "another instance wrote the token since it was read",
            Refused::Removed => "the token was removed (credproxy logout) since it was read",
        }
    }
}
