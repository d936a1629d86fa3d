package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestCrossSiteRefusedUnderActivation: the real binary, serving a socket
// systemd passed on an address that is not loopback, answers to that
// socket's own address as Host (not to its config's listen), refuses a
// rebinding Host and a cross-origin run with 403 and starts nothing.
func TestCrossSiteRefusedUnderActivation(t *testing.T) {
	ip := nonLoopbackIPv4()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address on this host")
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lnFile.Close() })
	g := startGateway(t, "auth: {allow_anonymous: true}\n"+`commands:
  echo:
    argv: [echo, hi]
`, gatewayOptions{listen: freeAddr(t), extra: activate(lnFile)})
	defer g.stop()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	send := func(method, path, host string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+ln.Addr().String()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusForbidden && resp.Header.Get("Execgw-Job-Id") != "" {
			t.Errorf("refused request started job %s", resp.Header.Get("Execgw-Job-Id"))
		}
		return resp.StatusCode, string(b)
	}
	own := ln.Addr().String()
	if code, body := send("POST", "/v1/commands/echo/run", own); code != 200 {
		t.Errorf("run with Host %s (the passed socket) = %d %s, want 200", own, code, body)
	}
	if code, body := send("POST", "/v1/commands/echo/run", own, "Origin", "http://"+own, "Sec-Fetch-Site", "same-origin"); code != 200 {
		t.Errorf("same-origin run = %d %s, want 200", code, body)
	}
	for _, tc := range []struct {
		name, method, path, host string
		header                   []string
	}{
		{"rebinding run", "POST", "/v1/commands/echo/run", "attacker.example:" + port, nil},
		{"rebinding jobs", "GET", "/v1/jobs", "attacker.example:" + port, nil},
		{"rebinding metrics", "GET", "/metrics", "attacker.example:" + port, nil},
		{"cross-origin run", "POST", "/v1/commands/echo/run", own, []string{"Origin", "http://attacker.example"}},
		{"cross-site run", "POST", "/v1/commands/echo/run", own, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		if code, body := send(tc.method, tc.path, tc.host, tc.header...); code != 403 || !strings.Contains(body, "permission_denied") {
			t.Errorf("%s = %d %s, want 403 permission_denied", tc.name, code, body)
		}
	}
	_, body := send("GET", "/v1/jobs", own)
	if n := strings.Count(body, `"command":"echo"`); n != 2 {
		t.Errorf("%d jobs recorded, want the 2 allowed runs: %s", n, body)
	}
}
