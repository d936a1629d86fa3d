package lifecycle

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fired reports whether the Idle has fired, without waiting.
func fired(i *Idle) bool {
	select {
	case <-i.Expired():
		return true
	default:
		return false
	}
}

// The timing tests run in a synctest bubble: time is fake, so "exactly
// after the timeout" is checked to the nanosecond, and nothing sleeps.

// firedAfter sleeps d in the bubble, lets the timers run, then checks
// whether i has fired.
func firedAfter(t *testing.T, i *Idle, d time.Duration, want bool, when string) {
	t.Helper()
	time.Sleep(d)
	synctest.Wait()
	if got := fired(i); got != want {
		t.Fatalf("%s: fired = %v, want %v", when, got, want)
	}
}

func TestIdleFiresAfterTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(time.Second)
		firedAfter(t, i, time.Second-time.Nanosecond, false, "fired before the timeout")
		firedAfter(t, i, time.Nanosecond, true, "not fired after the timeout with no activity")
	})
}

// KeepWhile: work elsewhere holds the exit off a whole timeout at a time,
// and is asked only once the timeout has passed.
func TestIdleKeepWhileBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var asked atomic.Int32
		busy := atomic.Bool{}
		busy.Store(true)
		i := NewIdle(time.Second)
		i.KeepWhile(func() bool {
			asked.Add(1)
			return busy.Load()
		})
		firedAfter(t, i, 3*time.Second, false, "fired while busy")
		if n := asked.Load(); n != 3 {
			t.Errorf("busy asked %d times in three timeouts, want 3", n)
		}
		busy.Store(false)
		firedAfter(t, i, time.Second, true, "not fired a timeout after the work went")
	})
}

func TestIdleBeginHoldsOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(time.Second)
		time.Sleep(900 * time.Millisecond)
		i.Begin() // 100 ms before it would fire
		firedAfter(t, i, time.Hour, false, "fired while work was in progress")
		i.End()
		// End re-arms for a whole timeout from now, not from the start.
		firedAfter(t, i, time.Second-time.Nanosecond, false, "fired less than the timeout after End")
		firedAfter(t, i, time.Nanosecond, true, "not fired the timeout after End")
	})
}

func TestIdleCountsNestedWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(time.Second)
		i.Begin() // a request
		i.Begin() // the job it submits
		i.End()   // the request answered 202; the job goes on
		firedAfter(t, i, time.Hour, false, "fired with one piece of work still in progress")
		i.End()
		firedAfter(t, i, time.Second, true, "not fired after the last End")
	})
}

func TestIdleEndRearmsEachTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(time.Second)
		// Short requests, each 600 ms after the last: never a whole
		// second idle.
		for range 10 {
			time.Sleep(600 * time.Millisecond)
			i.Begin()
			time.Sleep(10 * time.Millisecond)
			i.End()
		}
		synctest.Wait()
		if fired(i) {
			t.Fatalf("fired although no idle period lasted the timeout")
		}
		firedAfter(t, i, time.Second, true, "not fired a timeout after the last request")
		// After firing, more work changes nothing and fires nothing twice.
		i.Begin()
		i.End()
		time.Sleep(2 * time.Second)
		synctest.Wait()
	})
}

func TestIdleStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(time.Second)
		time.Sleep(500 * time.Millisecond)
		i.Stop()
		firedAfter(t, i, time.Hour, false, "fired after Stop")
		// Work after Stop does not re-arm the timer.
		i.Begin()
		i.End()
		firedAfter(t, i, time.Hour, false, "fired after Stop, Begin, End")
		i.Stop() // twice is fine
	})
}

func TestIdleStopAfterFiring(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(time.Second)
		firedAfter(t, i, time.Second, true, "not fired")
		i.Stop()
		if !fired(i) {
			t.Fatalf("Stop un-fired the channel")
		}
	})
}

func TestIdleZeroTimeoutNeverFires(t *testing.T) {
	for _, timeout := range []time.Duration{0, -time.Second} {
		synctest.Test(t, func(t *testing.T) {
			i := NewIdle(timeout)
			i.Begin()
			i.End()
			time.Sleep(24 * time.Hour)
			synctest.Wait()
			if fired(i) {
				t.Fatalf("NewIdle(%v) fired", timeout)
			}
		})
	}
}

// TestIdleConcurrent hammers Begin and End from several goroutines with a
// timeout so short that timers fire all the time, on real time and under
// the race detector: an Idle may fire in any gap between pieces of work,
// but never while a worker holds a Begin it took before seeing it unfired,
// and never twice (a second close would panic).
func TestIdleConcurrent(t *testing.T) {
	var firedWhileBusy atomic.Int64
	for range 200 {
		i := NewIdle(time.Microsecond)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for n := 0; n < 1000 && !fired(i); n++ {
					i.Begin()
					before := fired(i)
					runtime.Gosched() // let the timers' goroutines run
					if !before && fired(i) {
						firedWhileBusy.Add(1)
					}
					i.End()
				}
			})
		}
		wg.Wait()
		if n := firedWhileBusy.Load(); n > 0 {
			t.Fatalf("fired while work was in progress (%d times)", n)
		}
		select {
		case <-i.Expired():
		case <-time.After(10 * time.Second):
			t.Fatalf("not fired after everything ended")
		}
		// Work and Stop racing with a fired Idle neither panic nor
		// reopen it.
		for range 2 {
			wg.Go(func() {
				i.Begin()
				i.End()
				i.Stop()
			})
		}
		wg.Wait()
		if !fired(i) {
			t.Fatalf("Expired reopened")
		}
	}
}

// TestIdleStopRacesTimer stops Idles whose timers are firing at the same
// moment: either it fired before Stop, or it never fires.
func TestIdleStopRacesTimer(t *testing.T) {
	for range 200 {
		i := NewIdle(time.Microsecond)
		time.Sleep(time.Microsecond)
		i.Stop()
		before := fired(i)
		time.Sleep(100 * time.Microsecond)
		if after := fired(i); after != before {
			t.Fatalf("fired after Stop returned")
		}
	}
}

func TestIdleOnQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		i := NewIdle(0) // no idle exit: quiet periods are independent of it
		var calls atomic.Int32
		i.OnQuiet(5*time.Second, func() { calls.Add(1) })
		// after sleeps d, then checks that fn has been called want times.
		after := func(d time.Duration, want int32, when string) {
			t.Helper()
			time.Sleep(d)
			synctest.Wait()
			if n := calls.Load(); n != want {
				t.Fatalf("%s: called %d times, want %d", when, n, want)
			}
		}

		after(time.Hour, 0, "before any work")
		i.Begin()
		i.Begin()
		i.End()
		after(time.Hour, 0, "while work was in progress")
		i.End()
		after(5*time.Second-time.Nanosecond, 0, "just before a whole quiet period")
		after(time.Nanosecond, 1, "after the quiet period")
		after(time.Hour, 1, "without new work since")

		// Work that resumes within the quiet period postpones the call.
		i.Begin()
		i.End()
		time.Sleep(4 * time.Second)
		i.Begin()
		i.End()
		after(4*time.Second, 1, "4 s after the last work")
		after(time.Second, 2, "after the second quiet period")

		i.Begin()
		i.End()
		i.Stop()
		after(time.Hour, 2, "after Stop")
	})
}

// Stop waits for the OnQuiet function in progress: the gateway does not
// exit under it. (Real time: synctest cannot wait for a goroutine blocked
// on a mutex, which is what Stop is then.)
func TestIdleStopWaitsForOnQuiet(t *testing.T) {
	i := NewIdle(0)
	running, release := make(chan struct{}), make(chan struct{})
	i.OnQuiet(time.Millisecond, func() {
		close(running)
		<-release
	})
	i.Begin()
	i.End()
	<-running
	stopped := make(chan struct{})
	go func() { // exits once Stop returns, after release below
		i.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Stop returned while the OnQuiet function ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-stopped
}
