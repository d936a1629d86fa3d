package lifecycle

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"sync"
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
	if os.Getenv("LISTEN_FDS") != "" {
		lns, err = activation.Listeners()
		if err != nil {
			return nil, false, fmt.Errorf("socket activation: %w", err)
		}
		lns = nonNil(lns)
		if len(lns) == 0 {
			return nil, false, errors.New("socket activation: LISTEN_FDS is set but no listening stream socket was passed")
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
	// Drain refuses new jobs, lets running ones finish until ctx is done,
	// then cancels the rest and returns once every job has ended.
	Drain func(ctx context.Context)
}

// handlerExitGrace bounds how long handlers may take to return once every
// job has ended (writing a last response, a trailer, an exit event).
const handlerExitGrace = 5 * time.Second

// Run serves until a signal or idleness, then shuts down in order: stop
// accepting and say STOPPING=1, refuse new runs, let work finish for the
// grace, cancel what is left, let handlers answer, close. It returns nil
// after a graceful shutdown.
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
	serveErr := make(chan error, len(opts.Listeners))
	var serving sync.WaitGroup
	for _, ln := range opts.Listeners {
		if opts.MaxConnections > 0 {
			ln = netutil.LimitListener(ln, opts.MaxConnections)
		}
		serving.Add(1)
		go func() { // exits when Shutdown or Close closes the listener
			defer serving.Done()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
		log.Info().Str("listen", ln.Addr().String()).Msg("serving")
	}
	opts.SetReady(true)
	notify(log, daemon.SdNotifyReady)

	var idle <-chan struct{}
	if opts.Idle != nil {
		idle = opts.Idle.Expired()
	}
	var err error
	select {
	case sig := <-opts.Signals:
		log.Info().Str("signal", sig.String()).Dur("shutdown_grace", opts.ShutdownGrace).Msg("shutting down")
	case <-idle:
		log.Info().Msg("idle_exit reached; shutting down")
	case err = <-serveErr:
		log.Error().Err(err).Msg("serving failed; shutting down")
	}
	if opts.Idle != nil {
		opts.Idle.Stop()
	}

	notify(log, daemon.SdNotifyStopping)
	opts.SetReady(false)
	srv.SetKeepAlivesEnabled(false)
	shutdownDone := make(chan struct{})
	go func() { // exits when every handler has returned, or at Close
		defer close(shutdownDone)
		_ = srv.Shutdown(context.Background())
	}()

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

	select {
	case <-shutdownDone:
	case <-time.After(handlerExitGrace):
		log.Warn().Msg("handlers still running after the jobs ended; closing connections")
		cancelBase()
		_ = srv.Close()
		<-shutdownDone
	}
	serving.Wait()
	log.Info().Msg("stopped")
	return err
}

// notify tells systemd, when it listens, how the service is doing. It
// keeps NOTIFY_SOCKET set (unsetEnvironment false), or STOPPING=1 would
// go nowhere; children never see it, their environment is built from the
// config alone.
func notify(log zerolog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn().Err(err).Str("state", state).Msg("sd_notify failed")
	}
}

