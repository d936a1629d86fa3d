-- Shared by every script that writes a job record (the scripts are this
-- file followed by their own body).
--
-- A record is the hash p..'job:'..id: r the encoded record; s, c, o the
-- state, command and owner its index entries are filed under; e its member
-- of the ended index ('' while not ended); l the lease of the gateway that
-- may write it ('' for none); n the node that runs it; a, while the job is
-- queued, the parameters it runs with (secret ones too: another gateway
-- may take it); x a cancel requested by another gateway.

-- put_record writes a record and files it in the indexes, if the writer
-- holds the lease the stored record has (expect, or '*' for a writer that
-- takes over whatever lease there is: recovery); the record then has
-- lease. It returns false, writing nothing, when the lease is another's.
-- A job that leaves the queued state is no longer merely taken; one that
-- ends gives back its command's slot.
local function put_record(p, id, rec, state, cmd, owner, ended, expect, lease, node)
  local key = p .. 'job:' .. id
  local old = redis.call('HMGET', key, 's', 'c', 'o', 'e', 'l', 'n')
  if old[1] then
    if expect ~= '*' and (old[5] or '') ~= expect then
      return false
    end
    redis.call('ZREM', p .. 'idx:state:' .. old[1], id)
    redis.call('ZREM', p .. 'idx:cmd:' .. old[2], id)
    redis.call('ZREM', p .. 'idx:owner:' .. old[3], id)
    if old[4] and old[4] ~= '' then
      redis.call('ZREM', p .. 'idx:ended', old[4])
    end
  end
  redis.call('HSET', key, 'r', rec, 's', state, 'c', cmd, 'o', owner, 'e', ended, 'l', lease, 'n', node)
  redis.call('ZADD', p .. 'idx:all', 0, id)
  redis.call('ZADD', p .. 'idx:state:' .. state, 0, id)
  redis.call('ZADD', p .. 'idx:cmd:' .. cmd, 0, id)
  redis.call('ZADD', p .. 'idx:owner:' .. owner, 0, id)
  if ended ~= '' then
    redis.call('ZADD', p .. 'idx:ended', 0, ended)
    redis.call('HDEL', p .. 'slots:' .. cmd, id)
  end
  if state ~= 'queued' then
    if old[6] and old[6] ~= '' then
      redis.call('ZREM', p .. 'taken:' .. old[6], id)
    end
    redis.call('HDEL', key, 'a')
  end
  return true
end
