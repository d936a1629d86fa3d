package jobs

import (
	"os"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/execgw/execgw/internal/cgroup"
	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/logkey"
	"github.com/execgw/execgw/internal/runner"
)

// credential is the identity the command runs as, nil for the gateway's.
// Supplementary groups are always dropped (the runner leaves Groups empty).
func credential(cmd *config.Command) *syscall.Credential {
	if cmd.User == "" && cmd.Group == "" {
		return nil
	}
	uid, gid := cmd.Uid, cmd.Gid
	if uid < 0 {
		uid = os.Getuid()
	}
	if gid < 0 {
		gid = os.Getgid()
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// rlimits are the command's limits as the runner applies them: soft and
// hard alike.
func rlimits(cmd *config.Command) []runner.Rlimit {
	var out []runner.Rlimit
	for _, r := range cmd.Rlimits {
		out = append(out, runner.Rlimit{Resource: r.Resource, Soft: r.Value, Hard: r.Value})
	}
	return out
}

// releaseCgroup reads the job's cgroup accounting and removes the cgroup.
// The runner has already killed and waited for everything in it.
func (j *Job) releaseCgroup(log zerolog.Logger) cgroup.Stats {
	if j.cg == nil {
		return cgroup.Stats{}
	}
	stats := j.cg.Stats()
	if err := j.cg.Remove(); err != nil {
		log.Error().Err(err).Str("cgroup", j.cg.Path()).Msg("remove job cgroup")
	}
	_ = j.cg.Close()
	j.cg = nil
	return stats
}

// sweepCgroups kills whatever a previous instance left in job cgroups:
// at start-up no job of this instance runs yet, so every one is stale.
func (r *Registry) sweepCgroups() {
	if r.cgroups == nil {
		return
	}
	ids, err := r.cgroups.Jobs()
	if err != nil {
		r.log.Error().Err(err).Msg("list leftover job cgroups")
		return
	}
	for _, id := range ids {
		killed, err := r.cgroups.Sweep(id)
		log := r.log.With().Str(logkey.JobID, id).Logger()
		switch {
		case err != nil:
			log.Error().Err(err).Msg("sweep cgroup of interrupted job")
		case killed:
			log.Warn().Msg("killed processes left in the cgroup of an interrupted job")
		}
	}
}
