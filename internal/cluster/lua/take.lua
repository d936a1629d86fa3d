-- Leases the oldest queued job this node may run to it: the first in the
-- queue whose command is one of the node's and has a free slot in the
-- cluster. The job leaves the queue, takes its slot, and gets the lease
-- and the node; the node then starts it (its record says running) or gives
-- it back. Returns the record and its parameters, or false when no job
-- can be taken.
-- ARGV: prefix, node, lease, then command, limit pairs (limit 0: none)
local p, node, lease = ARGV[1], ARGV[2], ARGV[3]
local limits = {}
for i = 4, #ARGV, 2 do
  limits[ARGV[i]] = tonumber(ARGV[i + 1])
end
local full = {}
local from = '-'
while true do
  local ids = redis.call('ZRANGE', p .. 'queue', from, '+', 'BYLEX', 'LIMIT', 0, 128)
  for _, id in ipairs(ids) do
    local cmd = redis.call('HGET', p .. 'job:' .. id, 'c')
    if not cmd then
      redis.call('ZREM', p .. 'queue', id) -- its record was deleted
    elseif limits[cmd] ~= nil and not full[cmd] then
      local limit = limits[cmd]
      if limit == 0 or redis.call('HLEN', p .. 'slots:' .. cmd) < limit then
        redis.call('ZREM', p .. 'queue', id)
        redis.call('HSET', p .. 'slots:' .. cmd, id, node)
        redis.call('HSET', p .. 'job:' .. id, 'l', lease, 'n', node)
        redis.call('ZADD', p .. 'taken:' .. node, 0, id)
        return redis.call('HMGET', p .. 'job:' .. id, 'r', 'a')
      end
      full[cmd] = true
    end
  end
  if #ids < 128 then
    return false
  end
  from = '(' .. ids[#ids]
end
