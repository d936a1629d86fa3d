-- Creates or replaces a job record and files it in the indexes, taking it
-- out of those its previous version was in.
-- ARGV: prefix, id, record, state, command, owner, ended (its member of the
-- ended index: when it ended, then its id; '' while not ended)
local p, id = ARGV[1], ARGV[2]
local key = p .. 'job:' .. id
local old = redis.call('HMGET', key, 's', 'c', 'o', 'e')
if old[1] then
  redis.call('ZREM', p .. 'idx:state:' .. old[1], id)
  redis.call('ZREM', p .. 'idx:cmd:' .. old[2], id)
  redis.call('ZREM', p .. 'idx:owner:' .. old[3], id)
  if old[4] and old[4] ~= '' then
    redis.call('ZREM', p .. 'idx:ended', old[4])
  end
end
redis.call('HSET', key, 'r', ARGV[3], 's', ARGV[4], 'c', ARGV[5], 'o', ARGV[6], 'e', ARGV[7])
redis.call('ZADD', p .. 'idx:all', 0, id)
redis.call('ZADD', p .. 'idx:state:' .. ARGV[4], 0, id)
redis.call('ZADD', p .. 'idx:cmd:' .. ARGV[5], 0, id)
redis.call('ZADD', p .. 'idx:owner:' .. ARGV[6], 0, id)
if ARGV[7] ~= '' then
  redis.call('ZADD', p .. 'idx:ended', 0, ARGV[7])
end
return 1
