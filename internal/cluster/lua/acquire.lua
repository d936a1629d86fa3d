-- Takes a slot of a command for a job that runs without going through the
-- queue (a bound run), unless the command's limit is reached in the
-- cluster. Returns 1 when taken, 0 when full.
-- ARGV: prefix, command, id, node, limit (0: none)
local key = ARGV[1] .. 'slots:' .. ARGV[2]
local limit = tonumber(ARGV[5])
if limit > 0 and redis.call('HLEN', key) >= limit then
  return 0
end
redis.call('HSET', key, ARGV[3], ARGV[4])
return 1
