-- Records that a node is about to start a job it took, before the job's
-- process exists: the record (still queued, now naming the node) is
-- written if the node still holds the job's lease, and the job leaves the
-- node's taken set. From then on the node's death has the job recorded
-- interrupted, never queued again to run a second time. Fails FENCED when
-- the lease is no longer the node's: the job was given back meanwhile.
-- ARGV: prefix, id, record, command, owner, lease, node
local p, id, lease, node = ARGV[1], ARGV[2], ARGV[6], ARGV[7]
if redis.call('HGET', p .. 'job:' .. id, 's') ~= 'queued'
    or not put_record(p, id, ARGV[3], 'queued', ARGV[4], ARGV[5], '', lease, lease, node) then
  return redis.error_reply('FENCED the job is no longer this node\'s')
end
redis.call('ZREM', p .. 'taken:' .. node, id)
return 1
