-- Reports whether the queue holds a job of one of the commands given:
-- work that a gateway with these commands could take once a slot frees.
-- ARGV: prefix, then the commands
local p = ARGV[1]
local want = {}
for i = 2, #ARGV do
  want[ARGV[i]] = true
end
local from = '-'
while true do
  local ids = redis.call('ZRANGE', p .. 'queue', from, '+', 'BYLEX', 'LIMIT', 0, 128)
  for _, id in ipairs(ids) do
    local cmd = redis.call('HGET', p .. 'job:' .. id, 'c')
    if cmd and want[cmd] then
      return 1
    end
  end
  if #ids < 128 then
    return 0
  end
  from = '(' .. ids[#ids]
end
