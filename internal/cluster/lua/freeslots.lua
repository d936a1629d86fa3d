-- Frees the slots a node holds for jobs that cannot be holding one: no
-- record (its record was never stored: Redis went away in between), or a
-- record already ended. Returns how many it freed.
-- ARGV: prefix, node, then the commands whose slots to look at
local p, node = ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local key = p .. 'slots:' .. ARGV[i]
  local slots = redis.call('HGETALL', key)
  for j = 1, #slots, 2 do
    local id, holder = slots[j], slots[j + 1]
    if holder == node then
      local s = redis.call('HGET', p .. 'job:' .. id, 's')
      if not s or (s ~= 'queued' and s ~= 'running') then
        redis.call('HDEL', key, id)
        n = n + 1
      end
    end
  end
end
return n
