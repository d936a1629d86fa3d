// Package lifecycle is the life of the gateway process around its HTTP
// handler: the listeners (its own, or systemd's), readiness and systemd
// notifications, graceful shutdown on a signal, and exit when idle.
package lifecycle

import (
	"sync"
	"time"
)

// Idle fires once after a whole timeout with no activity in progress.
// Requests and jobs call Begin and End; only the count matters, so idle
// keep-alive connections do not keep the gateway up.
type Idle struct {
	timeout time.Duration
	fired   chan struct{}

	mu     sync.Mutex
	active int
	gen    uint64 // bumped by every Begin; a timer of an older generation is stale
	timer  *time.Timer
	done   bool

	busy func() bool // work that is not in progress here: see KeepWhile

	quietAfter time.Duration
	onQuiet    func()
	worked     bool // Begin was called since onQuiet last ran
	quietTimer *time.Timer
	quietRun   sync.Mutex // held while onQuiet runs: runs never overlap, and Stop waits for one
}

// NewIdle returns an Idle armed now. A timeout <= 0 never fires.
func NewIdle(timeout time.Duration) *Idle {
	i := &Idle{timeout: timeout, fired: make(chan struct{})}
	i.mu.Lock()
	i.armLocked()
	i.mu.Unlock()
	return i
}

// OnQuiet makes Idle call fn after each period of work, once nothing has
// been in progress for d, whatever the idle timeout. fn runs in a goroutine
// of its own, never twice at once; Stop waits for it. Call OnQuiet before
// the first Begin.
func (i *Idle) OnQuiet(d time.Duration, fn func()) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.quietAfter, i.onQuiet = d, fn
}

// KeepWhile makes Idle ask busy, once the timeout has passed with nothing in
// progress, whether there is work all the same (a cluster's queue holding a
// job this gateway could take); while there is, it waits another timeout.
// busy may take a while (it may ask Redis): it is called without Idle's lock.
func (i *Idle) KeepWhile(busy func() bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.busy = busy
}

// Begin marks work in progress.
func (i *Idle) Begin() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.active++
	i.gen++
	i.worked = true
	i.stopTimersLocked()
}

// End marks the end of work begun with Begin.
func (i *Idle) End() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.active--
	if i.active == 0 {
		i.armLocked()
		i.armQuietLocked()
	}
}

// Expired is closed when the gateway has been idle for the timeout.
func (i *Idle) Expired() <-chan struct{} { return i.fired }

// Stop disarms the timers for good, and waits for a run of the OnQuiet
// function in progress.
func (i *Idle) Stop() {
	i.mu.Lock()
	i.done = true
	i.gen++
	i.stopTimersLocked()
	i.mu.Unlock()
	// A timer that saw done unset took quietRun before releasing mu.
	i.quietRun.Lock()
	defer i.quietRun.Unlock()
}

func (i *Idle) stopTimersLocked() {
	for _, t := range []**time.Timer{&i.timer, &i.quietTimer} {
		if *t != nil {
			(*t).Stop()
			*t = nil
		}
	}
}

func (i *Idle) armLocked() {
	if i.timeout <= 0 || i.done {
		return
	}
	gen := i.gen
	// A timer that fires just as Begin runs finds a newer generation under
	// the lock and does nothing: Stop's result need not be trusted.
	i.timer = time.AfterFunc(i.timeout, func() {
		i.mu.Lock()
		busy := i.busy
		i.mu.Unlock()
		stillBusy := busy != nil && busy()
		i.mu.Lock()
		defer i.mu.Unlock()
		if gen != i.gen || i.active != 0 || i.done {
			return
		}
		if stillBusy {
			i.armLocked()
			return
		}
		i.done = true
		close(i.fired)
	})
}

func (i *Idle) armQuietLocked() {
	if i.onQuiet == nil || !i.worked || i.done {
		return
	}
	gen := i.gen
	i.quietTimer = time.AfterFunc(i.quietAfter, func() {
		i.mu.Lock()
		// A run still in progress (TryLock fails) does this one's work.
		run := gen == i.gen && i.active == 0 && !i.done && i.quietRun.TryLock()
		if run {
			i.worked = false
		}
		i.mu.Unlock()
		if run {
			defer i.quietRun.Unlock()
			i.onQuiet()
		}
	})
}
