-- Puts the jobs a node took from the queue but never started back in it,
-- with their slots freed, once the node is dead or gives them back.
-- Returns how many went back.
-- ARGV: prefix, node
local p, node = ARGV[1], ARGV[2]
local ids = redis.call('ZRANGE', p .. 'taken:' .. node, 0, -1)
local n = 0
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', p .. 'job:' .. id, 's', 'c', 'n')
  if f[1] == 'queued' and f[3] == node then
    redis.call('HDEL', p .. 'slots:' .. f[2], id)
    redis.call('HSET', p .. 'job:' .. id, 'l', '', 'n', '')
    redis.call('ZADD', p .. 'queue', 0, id)
    n = n + 1
  end
end
redis.call('DEL', p .. 'taken:' .. node)
return n
