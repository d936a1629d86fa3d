package handler

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"
)

// hostRule is one Host header value the gateway answers to: a host on
// any port when port is empty, else that host on that port.
type hostRule struct {
	host, port string
}

// hostRules are the Host values served: allowed_hosts when configured;
// else, without tokens, the listeners' own addresses and the loopback
// names; with tokens, any (nil). Without tokens a foreign Host can only be
// a DNS-rebinding page reaching a loopback gateway through its own name.
func hostRules(allowed []string, tokens bool, listeners []net.Addr) []hostRule {
	var rules []hostRule
	for _, h := range allowed {
		rules = append(rules, splitHost(h))
	}
	if len(rules) > 0 || tokens {
		return rules
	}
	for _, h := range []string{"localhost", "127.0.0.1", "[::1]"} {
		rules = append(rules, splitHost(h))
	}
	for _, a := range listeners {
		if tcp, ok := a.(*net.TCPAddr); ok {
			rules = append(rules, splitHost(tcp.String()))
		}
	}
	return rules
}

// splitHost splits "host", "host:port", "[v6]" or "[v6]:port", lower-case
// and without brackets.
func splitHost(v string) hostRule {
	v = strings.ToLower(v)
	if h, p, err := net.SplitHostPort(v); err == nil {
		return hostRule{host: h, port: p}
	}
	return hostRule{host: strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")}
}

func hostAllowed(rules []hostRule, host string) bool {
	if rules == nil {
		return true
	}
	got := splitHost(host)
	for _, r := range rules {
		if r.host == got.host && (r.port == "" || r.port == got.port) {
			return true
		}
	}
	return false
}

// refuseCrossSite answers 403 to a request a web page of another origin
// made the operator's browser send, and to one whose Host the gateway does
// not answer to (DNS rebinding), on every route, tokens or not. A request
// without Origin and Sec-Fetch-Site is not a browser's and passes the
// origin check.
func refuseCrossSite(rules []hostRule) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if !hostAllowed(rules, req.Host) {
				return errCrossSite(fmt.Sprintf("Host %q is not one this gateway answers to (allowed_hosts); a web page reached through another name may not use it", req.Host))
			}
			if req.Header.Get("Sec-Fetch-Site") == "cross-site" {
				return errCrossSite("cross-site request refused (Sec-Fetch-Site: cross-site): a web page of another site may not use this gateway")
			}
			if origin := req.Header.Get("Origin"); origin != "" {
				if own := ownOrigin(req); !sameOrigin(origin, own) {
					return errCrossSite(fmt.Sprintf("cross-origin request refused: Origin %q is not this gateway's own (%s)", origin, own))
				}
			}
			return next(c)
		}
	}
}

// ownOrigin is the origin a page served by this request's Host has. Behind
// a proxy that terminates TLS, X-Forwarded-Proto says the scheme; a page
// cannot set it cross-origin without a preflight the gateway never grants.
func ownOrigin(req *http.Request) string {
	scheme := "http"
	if req.TLS != nil || strings.EqualFold(req.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + req.Host
}

// sameOrigin compares scheme, host and port, a missing port being the
// scheme's default. "null" (sandboxed frames, file: pages) is never equal.
func sameOrigin(a, b string) bool {
	ua, err := url.Parse(a)
	if err != nil || ua.Host == "" {
		return false
	}
	ub, err := url.Parse(b)
	if err != nil || ub.Host == "" {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) &&
		strings.EqualFold(ua.Hostname(), ub.Hostname()) &&
		originPort(ua) == originPort(ub)
}

func originPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}
