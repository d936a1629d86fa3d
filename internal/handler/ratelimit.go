package handler

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/execgw/execgw/internal/config"
)

// unlimitedRoutes are never rate limited: probes and scrapers must see the
// gateway as it is, however busy its clients keep it.
var unlimitedRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// maxTrackedClients bounds the buckets kept for anonymous clients (one per
// IPv4 address or IPv6 /64), about 100 bytes each: whatever the number of
// addresses a flood comes from, the limiter's memory stays bounded.
const maxTrackedClients = 16384

// minSweep is the number of client buckets below which no sweep runs.
const minSweep = 64

// maxRetryAfter caps Retry-After for very low rates: a client told to wait
// a day comes back and is told again.
const maxRetryAfter = 24 * 60 * 60

// limitRate answers 429 resource_exhausted, with Retry-After, to a token
// (or, without one, a client address) that exceeds limits.rate requests
// per second beyond a burst of limits.burst. It runs after identify, which
// resolves the token.
func (h *handler) limitRate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if h.limiter == nil || unlimitedRoutes[c.Path()] {
			return next(c)
		}
		var (
			ok   bool
			wait time.Duration
			who  string
		)
		if tok := requestToken(c); tok != nil {
			ok, wait = h.limiter.allowToken(tok.Name)
			who = fmt.Sprintf("token %q", tok.Name)
		} else {
			// Anonymous, or a token that did not match: the address pays,
			// which also slows down anyone guessing tokens.
			ok, wait = h.limiter.allowClient(clientKey(remoteIP(c.Request())))
			who = "this client address"
		}
		if ok {
			return next(c)
		}
		return errLimited(codeResourceExhausted,
			fmt.Sprintf("rate limit exceeded for %s: limits.rate is %g requests per second with a limits.burst of %d",
				who, h.limiter.rate, int(h.limiter.burst)),
			retryAfterSeconds(wait))
	}
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1 (0 would
// invite an immediate retry that fails again).
func retryAfterSeconds(wait time.Duration) int {
	s := math.Ceil(wait.Seconds())
	return int(min(max(s, 1), maxRetryAfter))
}

// clientKey is what an anonymous client is limited by: its IPv4 address,
// or the /64 of its IPv6 address, since one host commonly holds a whole
// /64. Anything else (a Unix socket's peer) is used as it is.
func clientKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	p, err := addr.WithZone("").Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// rateLimiter is a token bucket (x/time/rate) per configured token and
// per anonymous client address. Token buckets are made once, from the
// configuration, so only client buckets come and go: those are bounded by
// maxTrackedClients, and buckets that have refilled completely are
// dropped, since a new bucket behaves exactly like a full one.
type rateLimiter struct {
	rate  float64 // tokens added per second
	burst float64 // bucket size
	now   func() time.Time

	mu      sync.Mutex
	tokens  map[string]*rate.Limiter // by token name; fixed after construction
	clients map[string]*rate.Limiter // by clientKey
	sweepAt int                      // sweep the clients when they reach this many
}

func (l *rateLimiter) newBucket() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(l.rate), int(l.burst))
}

// newRateLimiter returns the limiter the configuration asks for, or nil
// when limits.rate is 0 (unlimited).
func newRateLimiter(lim config.Limits, tokens []config.Token, now func() time.Time) *rateLimiter {
	if lim.Rate <= 0 {
		return nil
	}
	l := &rateLimiter{
		rate:    lim.Rate,
		burst:   float64(max(lim.Burst, 1)),
		now:     now,
		tokens:  make(map[string]*rate.Limiter, len(tokens)),
		clients: map[string]*rate.Limiter{},
		sweepAt: minSweep,
	}
	for _, t := range tokens {
		l.tokens[t.Name] = l.newBucket()
	}
	return l
}

// allowToken takes one request from the token's bucket; when there is
// none left, it says how long until there is.
func (l *rateLimiter) allowToken(name string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.tokens[name]
	if b == nil { // not configured: cannot happen, but must not be unlimited
		return l.takeClientLocked("token:" + name)
	}
	return l.take(b, l.now())
}

// allowClient is allowToken for an anonymous client's address.
func (l *rateLimiter) allowClient(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeClientLocked(key)
}

func (l *rateLimiter) takeClientLocked(key string) (bool, time.Duration) {
	now := l.now()
	b := l.clients[key]
	if b == nil {
		if len(l.clients) >= l.sweepAt {
			l.sweepLocked(now)
		}
		b = l.newBucket()
		l.clients[key] = b
	}
	return l.take(b, now)
}

// take takes one token from the bucket at now; when there is none, it
// says how long until there is, and takes nothing.
func (l *rateLimiter) take(b *rate.Limiter, now time.Time) (bool, time.Duration) {
	r := b.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	if wait == 0 {
		return true, 0
	}
	r.CancelAt(now)
	return false, min(wait, maxRetryAfter*time.Second)
}

// sweepLocked drops the client buckets that have refilled. If more than
// half of maxTrackedClients remain (a flood from many addresses), it drops
// arbitrary ones down to half: such a client starts again with a full
// burst, which bounds memory at the price of some precision only while the
// gateway is flooded. The next sweep comes when the map has doubled or
// reached the bound, at least as many insertions later as the sweep
// visited buckets, so sweeping costs amortized O(1) a request.
func (l *rateLimiter) sweepLocked(now time.Time) {
	for key, b := range l.clients {
		if b.TokensAt(now) >= l.burst {
			delete(l.clients, key)
		}
	}
	for key := range l.clients { // Go's map order is random: fair enough
		if len(l.clients) <= maxTrackedClients/2 {
			break
		}
		delete(l.clients, key)
	}
	l.sweepAt = min(max(2*len(l.clients), minSweep), maxTrackedClients)
}
