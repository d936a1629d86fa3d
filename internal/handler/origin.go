package handler

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/config"
)

// hostPolicy says which Host header values the gateway answers to. A page
// on another site can make the operator's browser send requests to the
// gateway; with DNS rebinding such a page can even read the answers, but
// its requests then carry the attacker's host name, which is refused here.
type hostPolicy struct {
	any       bool            // every host (tokens configured, no allowed_hosts)
	hosts     map[string]bool // hosts served on any port
	hostPorts map[string]bool // host:port pairs
}

// newHostPolicy builds the policy of allowed_hosts; without it, the
// default: with tokens every host (a request needs a token anyway, which a
// foreign page does not have), without them the loopback names and the
// listeners' own addresses.
func newHostPolicy(cfg *config.Config, listenAddrs []string) hostPolicy {
	p := hostPolicy{hosts: map[string]bool{}, hostPorts: map[string]bool{}}
	entries := cfg.AllowedHosts
	if len(entries) == 0 {
		if len(cfg.Auth.Tokens) > 0 {
			return hostPolicy{any: true}
		}
		entries = append([]string{"localhost", "127.0.0.1", "[::1]"}, listenAddrs...)
	}
	for _, e := range entries {
		e = strings.ToLower(e)
		if _, _, err := net.SplitHostPort(e); err == nil {
			p.hostPorts[e] = true
		} else {
			p.hosts[e] = true
		}
	}
	return p
}

// allows reports whether a request with this Host header is served.
func (p hostPolicy) allows(host string) bool {
	if p.any {
		return true
	}
	host = strings.ToLower(host)
	name, port, err := net.SplitHostPort(host)
	if err != nil { // no port: the scheme's default
		name, port = strings.Trim(host, "[]"), "80"
	}
	bracketed := name
	if strings.Contains(name, ":") {
		bracketed = "[" + name + "]"
	}
	return p.hosts[bracketed] || p.hostPorts[net.JoinHostPort(name, port)]
}

// sameOrigin refuses what a web page on another origin could make a
// browser send: a request whose Host the gateway does not answer to (DNS
// rebinding), whose Origin is not the gateway's own, or that the browser
// itself marks as cross-site. Clients other than browsers send neither
// Origin nor Sec-Fetch-Site, and pass on their Host alone.
func (h *handler) sameOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if !h.hosts.allows(req.Host) {
			return errCrossSite("host %q is not one this gateway answers to (allowed_hosts)", truncate(req.Host, 100))
		}
		if origin := req.Header.Get("Origin"); origin != "" && !isOwnOrigin(origin, req) {
			return errCrossSite("a request from the web page %q, another origin than the gateway's, is refused", truncate(origin, 100))
		}
		if req.Header.Get("Sec-Fetch-Site") == "cross-site" {
			return errCrossSite("a cross-site request (Sec-Fetch-Site: cross-site) is refused")
		}
		return next(c)
	}
}

// isOwnOrigin reports whether origin is the gateway's own as the request
// reached it: same scheme, host and port as the request's Host.
func isOwnOrigin(origin string, req *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Path != "" || u.RawQuery != "" {
		return false // "null" (a sandboxed or file page) among others
	}
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(u.Scheme, scheme) && strings.EqualFold(withPort(u.Host, scheme), withPort(req.Host, scheme))
}

// withPort adds the scheme's default port to a host without one.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}
