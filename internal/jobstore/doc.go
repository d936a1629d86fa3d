// Package jobstore holds the embedded implementations of the job store
// interfaces: Bolt, a jobs.Store in one bbolt file, and Files, a
// jobs.OutputStore keeping each job's stdout and stderr as plain files.
//
// bbolt fits a single gateway: it is pure Go (no cgo, so the binary stays
// static), keeps everything in one file under the state directory, and every
// read-write transaction is ACID and fsync'd before it returns, so a record
// whose Put returned survives a crash or power loss. It allows one writer at
// a time and takes an exclusive file lock, which is what one gateway per
// state directory wants: a second gateway started on the same directory
// fails at start-up instead of corrupting it.
//
// Several gateways sharing work need a shared store instead (Redis, see
// "Scale-out" in the spec); it stands beside these behind jobs.Store and
// jobs.OutputStore, and neither the registry nor the handler changes.
package jobstore
