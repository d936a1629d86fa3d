package lifecycle

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/execgw/execgw/internal/logkey"
)

// Listen returns the sockets systemd passed (LISTEN_FDS), or else one
// listening on addr. Either way no inherited descriptor reaches a child:
// go-systemd marks its sockets close-on-exec and unsets LISTEN_*, and every
// other inherited descriptor above stderr is marked too.
func Listen(addr string) (lns []net.Listener, activated bool, err error) {
	if fds := os.Getenv("LISTEN_FDS"); fds != "" {
		// Files ignores the sockets of another process; say so rather
		// than report that none were passed.
		if pid := os.Getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
			return nil, false, fmt.Errorf("socket activation: LISTEN_FDS=%s is set for process LISTEN_PID=%s, not this one (%d): start the gateway with exec, not as a child of a wrapper", fds, pid, os.Getpid())
		}
		lns, err = activation.Listeners()
		if err != nil {
			return nil, false, fmt.Errorf("socket activation: %w", err)
		}
		lns = nonNil(lns)
		if len(lns) == 0 {
			return nil, false, fmt.Errorf("socket activation: LISTEN_FDS=%s but no listening stream socket was passed", fds)
		}
		activated = true
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return nil, false, fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	if activated {
		return lns, true, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return []net.Listener{ln}, false, nil
}

// nonNil drops the entries activation.Listeners leaves nil for passed
// descriptors that are not stream sockets.
func nonNil(lns []net.Listener) []net.Listener {
	out := lns[:0]
	for _, ln := range lns {
		if ln != nil {
			out = append(out, ln)
		}
	}
	return out
}

// Options configure Run.
type Options struct {
	Listeners         []net.Listener
	Handler           http.Handler
	Log               zerolog.Logger
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxConnections    int // per listener; 0: unlimited
	ShutdownGrace     time.Duration
	// Signals ask for a graceful shutdown; a second one cuts the grace.
	Signals <-chan os.Signal
	// Idle, if set, ends the gateway gracefully when it fires.
	Idle *Idle
	// SetReady is told when the gateway starts and stops taking work.
	SetReady func(bool)
	// Refuse makes every new run fail (503) from now on. Run calls it
	// before Drain, so that a request arriving on a connection accepted
	// before the shutdown finds the gateway refusing.
	Refuse func()
	// Active, if set, counts the queued and running jobs, for the log.
	Active func() int
	// Drain refuses new jobs, lets running ones finish until ctx is done,
	// then cancels the rest and returns once every job has ended.
	Drain func(ctx context.Context)
}

// handlerExitGrace bounds how long handlers may take to return once every
// job has ended (writing a last response, a trailer, an exit event). A
// variable only so that tests can shorten it.
var handlerExitGrace = 5 * time.Second

// Run serves until a signal or idleness, then shuts down in order: stop
// accepting, say STOPPING=1, turn /readyz 503, refuse new runs, let work
// finish for the grace, cancel what is left, let handlers answer, close.
// It returns nil after a graceful shutdown.
//
// It does not call http.Server.Shutdown until the jobs have ended:
// Shutdown drops every request whose headers arrive after it began, even
// on a connection accepted before, without an answer. Until then the
// listeners are closed by hand and connections already accepted are
// served, each closed after its response, so a request in flight gets
// its 503 rather than a reset.
func Run(opts Options) error {
	log := opts.Log.With().Str(logkey.Component, "server").Logger()
	// Handlers live by baseCtx: canceling it is the last word to any
	// handler still running once the jobs are gone.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           opts.Handler,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          stdlog.New(log, "", 0),
	}

	var stopping atomic.Bool // set before Run closes the listeners
	serveErr := make(chan error, len(opts.Listeners))
	var serving sync.WaitGroup
	lns := make([]net.Listener, 0, len(opts.Listeners))
	for _, ln := range opts.Listeners {
		if opts.MaxConnections > 0 {
			ln = netutil.LimitListener(ln, opts.MaxConnections)
		}
		lns = append(lns, ln)
		serving.Add(1)
		go func() { // exits when the listener is closed
			defer serving.Done()
			err := srv.Serve(ln)
			if !stopping.Load() && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
		log.Info().Str("listen", ln.Addr().String()).Msg("serving")
	}
	opts.SetReady(true)
	log.Info().Bool("systemd_notified", notify(log, daemon.SdNotifyReady)).Msg("ready")

	var idle <-chan struct{}
	if opts.Idle != nil {
		idle = opts.Idle.Expired()
	}
	var err error
	select {
	case sig := <-opts.Signals:
		log.Info().Str("signal", sig.String()).Stringer("shutdown_grace", opts.ShutdownGrace).Msg("shutting down")
	case <-idle:
		log.Info().Stringer("idle_exit", opts.Idle.timeout).Msg("idle: no request or job for idle_exit; shutting down")
	case err = <-serveErr:
		log.Error().Err(err).Msg("serving failed; shutting down")
	}
	if opts.Idle != nil {
		opts.Idle.Stop()
	}

	// Stop accepting. Idle keep-alive connections are closed now, the
	// others after their current response. Under socket activation the
	// socket itself stays open in systemd, and new connections wait in its
	// backlog for the next instance.
	stopping.Store(true)
	srv.SetKeepAlivesEnabled(false)
	for _, ln := range lns {
		_ = ln.Close()
	}
	serving.Wait()
	log.Info().Msg("stopped accepting connections")
	notify(log, daemon.SdNotifyStopping)
	opts.SetReady(false)
	if opts.Refuse != nil {
		opts.Refuse()
	}
	ev := log.Info().Stringer("shutdown_grace", opts.ShutdownGrace)
	if opts.Active != nil {
		ev = ev.Int("jobs", opts.Active())
	}
	ev.Msg("draining: new runs refused; waiting for jobs to end")

	graceCtx, cancelGrace := context.WithTimeout(context.Background(), opts.ShutdownGrace)
	defer cancelGrace()
	drained := make(chan struct{})
	go func() { // exits when every job has ended
		defer close(drained)
		opts.Drain(graceCtx)
	}()
	for waiting := true; waiting; {
		select {
		case <-drained:
			waiting = false
		case sig := <-opts.Signals:
			log.Warn().Str("signal", sig.String()).Msg("second signal; canceling jobs now")
			cancelGrace()
		}
	}
	log.Info().Msg("every job has ended; waiting for handlers to answer")

	// Let the handlers answer: their responses end with the jobs.
	exitCtx, cancelExit := context.WithTimeout(context.Background(), handlerExitGrace)
	defer cancelExit()
	shutdownDone := make(chan struct{})
	go func() { // exits when every connection is closed, or at cancelExit
		defer close(shutdownDone)
		if srv.Shutdown(exitCtx) != nil {
			log.Warn().Stringer("wait", handlerExitGrace).Msg("handlers still running after the jobs ended; closing connections")
		}
	}()
	select {
	case <-shutdownDone:
	case sig := <-opts.Signals:
		log.Warn().Str("signal", sig.String()).Msg("another signal; closing connections now")
		cancelExit()
		<-shutdownDone
	}
	cancelBase()
	_ = srv.Close()
	if err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// notify tells systemd, when it listens, how the service is doing. It
// keeps NOTIFY_SOCKET set (unsetEnvironment false), or STOPPING=1 would
// go nowhere; children never see it, their environment is built from the
// config alone. It reports whether the message was sent.
func notify(log zerolog.Logger, state string) bool {
	sent, err := daemon.SdNotify(false, state)
	if err != nil {
		log.Warn().Err(err).Str("state", state).Msg("sd_notify failed")
	}
	return sent
}
