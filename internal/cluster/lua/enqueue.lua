-- Stores a new queued job's record and puts it at the end of the queue, in
-- one step, unless max_queued jobs already wait.
-- ARGV: prefix, id, record, command, owner, max_queued, parameters
local p, id = ARGV[1], ARGV[2]
if redis.call('ZCARD', p .. 'queue') >= tonumber(ARGV[6]) then
  return redis.error_reply('QUEUEFULL max_queued jobs are waiting')
end
if redis.call('EXISTS', p .. 'job:' .. id) == 1 then
  return redis.error_reply('EXISTS the job exists already')
end
put_record(p, id, ARGV[3], 'queued', ARGV[4], ARGV[5], '', '', '', '')
redis.call('HSET', p .. 'job:' .. id, 'a', ARGV[7])
redis.call('ZADD', p .. 'queue', 0, id)
return 1
