-- Creates or replaces a job record, if the writer holds its lease.
-- ARGV: prefix, id, record, state, command, owner, ended, expect, lease, node
if not put_record(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]) then
  return redis.error_reply('FENCED the job record has another lease')
end
return 1
