-- One page of job records, newest first: walks the smallest index the
-- filter names (or the index of every job) from the cursor down, keeps the
-- records that match the whole filter. Returns the records, then the cursor
-- of the next page ('' when there is none).
-- ARGV: prefix, state, command, owner, after ('' from the newest), limit
local p = ARGV[1]
local state, cmd, owner, after, limit = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])

local idx, smallest = p .. 'idx:all', nil
local function consider(key)
  local n = redis.call('ZCARD', key)
  if smallest == nil or n < smallest then
    idx, smallest = key, n
  end
end
if state ~= '' then consider(p .. 'idx:state:' .. state) end
if cmd ~= '' then consider(p .. 'idx:cmd:' .. cmd) end
if owner ~= '' then consider(p .. 'idx:owner:' .. owner) end

local out, last = {}, nil
local max = '+'
if after ~= '' then max = '(' .. after end
local batch = 256
while true do
  local ids = redis.call('ZREVRANGEBYLEX', idx, max, '-', 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', p .. 'job:' .. id, 's', 'c', 'o', 'r')
    if f[1] and (state == '' or f[1] == state) and (cmd == '' or f[2] == cmd)
        and (owner == '' or f[3] == owner) then
      if #out == limit then
        table.insert(out, last)
        return out
      end
      table.insert(out, f[4])
      last = id
    end
  end
  if #ids < batch then break end
  max = '(' .. ids[#ids]
end
table.insert(out, '')
return out
