// Package cluster keeps the jobs of several gateways in one Redis: their
// records, their output and the queue of detached jobs, so that any
// gateway of the cluster answers for any job.
//
// Every key starts with the cluster's prefix in braces, a Redis Cluster
// hash tag: all keys of one cluster live in one slot, so that the Lua
// scripts that change several of them at once work on a Redis Cluster too.
package cluster

import "github.com/execgw/execgw/internal/jobs"

// keys names the Redis keys of one cluster.
type keys struct {
	prefix string // "{execgw}:"
}

func newKeys(prefix string) keys { return keys{prefix: "{" + prefix + "}:"} }

// output is the Redis Stream holding one output stream of a job.
func (k keys) output(id string, s jobs.Stream) string {
	return k.prefix + "out:" + id + ":" + string(s)
}
