-- Removes a job record and its index entries; returns 0 when there is none.
-- ARGV: prefix, id
local p, id = ARGV[1], ARGV[2]
local key = p .. 'job:' .. id
local old = redis.call('HMGET', key, 's', 'c', 'o', 'e')
if not old[1] then
  return 0
end
redis.call('ZREM', p .. 'idx:state:' .. old[1], id)
redis.call('ZREM', p .. 'idx:cmd:' .. old[2], id)
redis.call('ZREM', p .. 'idx:owner:' .. old[3], id)
redis.call('ZREM', p .. 'idx:all', id)
if old[4] and old[4] ~= '' then
  redis.call('ZREM', p .. 'idx:ended', old[4])
end
redis.call('DEL', key)
return 1
