-- Ends a job that is still in the queue (canceled, or interrupted when the
-- queue is given up), in one step with taking it out: a job taken by a
-- gateway meanwhile is not touched. Returns 1 when the job was in the
-- queue, 0 otherwise.
-- ARGV: prefix, id, record, state, command, owner, ended
local p, id = ARGV[1], ARGV[2]
if redis.call('ZREM', p .. 'queue', id) == 0 then
  return 0
end
put_record(p, id, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], '', '', '')
return 1
