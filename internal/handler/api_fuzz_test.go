package handler

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// apiFuzzConfig serves printf, which prints each argument after its format
// as one "[...]" line, behind a token.
var apiFuzzConfig = `
auth:
  tokens:
    - {name: ops, sha256: "` + sha256Hex(opsToken) + `", commands: ["*"]}
limits: {max_query_bytes: 8KiB, max_param_bytes: 4KiB}
commands:
  args:
    argv: ["printf", "[%s]\n", "{a}", "{b}"]
    params:
      a: {required: true}
      b: {}
`

// FuzzRunArgument runs printf "[%s]\n" {a} [{b}] through the whole API,
// with the values sent in the query or a JSON body, answered as JSON or a
// raw stream. Properties: no 5xx; a value that the rules accept (valid
// UTF-8, no NUL, within max_param_bytes and max_query_bytes) runs; and
// whenever a run answers 200, printf printed exactly "[a]\n" then "[b]\n":
// no value lost, split, merged with another, or turned into an option.
func FuzzRunArgument(f *testing.F) {
	s := startAuthServer(f, apiFuzzConfig)

	f.Add("hello", "", false, uint8(0))
	f.Add("a b", "c d", true, uint8(1))
	f.Add("1; touch /tmp/x", "$(id)", true, uint8(2))
	f.Add("`id`", "'quoted' \"double\"", true, uint8(3))
	f.Add("-n", "--help", true, uint8(0))
	f.Add("%s%n%d", "\\n\\c", true, uint8(1))
	f.Add("{b}", "{a}", true, uint8(2))
	f.Add("&b=x", "=", true, uint8(0))
	f.Add("line1\nline2\r\n", "\t", true, uint8(3))
	f.Add("nul\x00byte", "", false, uint8(0))
	f.Add("bad\xffutf8", "", false, uint8(1))
	f.Add("ünïcødé ✓ 𝄞", "\u202e", true, uint8(3))
	f.Add("", "", true, uint8(0))
	f.Add(strings.Repeat("x", 4097), "", false, uint8(1))
	f.Add(strings.Repeat("%", 3000), "", false, uint8(0))

	f.Fuzz(func(t *testing.T, a, b string, giveB bool, form uint8) {
		inJSON := form&1 != 0 // else the query string
		raw := form&2 != 0    // Accept: text/plain, else the JSON record
		sentA, sentB := a, b
		target := "/v1/commands/args/run"
		var body io.Reader
		if inJSON {
			params := map[string]string{"a": a}
			if giveB {
				params["b"] = b
			}
			js, err := json.Marshal(map[string]any{"params": params})
			if err != nil {
				t.Fatal(err)
			}
			body = strings.NewReader(string(js))
			// json.Marshal replaces invalid UTF-8: the gateway gets that.
			sentA, sentB = jsonRoundTrip(a), jsonRoundTrip(b)
		} else {
			q := url.Values{"a": {a}}
			if giveB {
				q.Set("b", b)
			}
			target += "?" + q.Encode()
		}
		req, err := http.NewRequest("POST", s.URL+target, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+opsToken)
		if inJSON {
			req.Header.Set("Content-Type", "application/json")
		}
		if raw {
			req.Header.Set("Accept", "text/plain")
		}
		resp, respBody := fetch(t, req)
		if l := s.log.take(); strings.Contains(l, `"level":"error"`) {
			t.Fatalf("the gateway logged an error:\n%s", l)
		}

		if resp.StatusCode >= 500 {
			t.Fatalf("a=%q b=%q (json %v raw %v): %d %s", a, b, inJSON, raw, resp.StatusCode, respBody)
		}
		valid := validValue(sentA) && (!giveB || validValue(sentB)) &&
			(inJSON || len(req.URL.RawQuery) <= 8<<10)
		if valid && resp.StatusCode != http.StatusOK {
			t.Fatalf("a=%q b=%q (json %v raw %v): %d %s; want 200, the values are valid", a, b, inJSON, raw, resp.StatusCode, respBody)
		}
		if resp.StatusCode != http.StatusOK {
			return
		}
		want := "[" + sentA + "]\n"
		if giveB {
			want += "[" + sentB + "]\n"
		}
		var stdout string
		if raw {
			stdout = string(respBody)
			if state := resp.Trailer.Get(trailerState); state != "succeeded" {
				t.Errorf("trailer %s: %q, want succeeded", trailerState, state)
			}
		} else {
			var rec struct {
				State  string `json:"state"`
				Stdout string `json:"stdout"`
			}
			if err := json.Unmarshal(respBody, &rec); err != nil {
				t.Fatalf("record %s: %v", respBody, err)
			}
			if rec.State != "succeeded" {
				t.Errorf("state %q, want succeeded", rec.State)
			}
			stdout = rec.Stdout
		}
		if stdout != want {
			t.Fatalf("a=%q b=%q (json %v raw %v): printf printed %q, want %q", a, b, inJSON, raw, stdout, want)
		}
	})
}

// validValue is the gateway's rule for a string parameter without a
// pattern or max_len, stated independently.
func validValue(v string) bool {
	return utf8.ValidString(v) && !strings.ContainsRune(v, 0) && len(v) <= 4<<10
}

func jsonRoundTrip(s string) string {
	js, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(js, &out)
	return out
}

// FuzzRawRequest writes arbitrary requests on a socket, as an attacker
// would, bypassing every check a Go client makes. Properties: no 5xx, no
// panic (in a handler or in net/http), no error logged by the gateway.
func FuzzRawRequest(f *testing.F) {
	s := startAuthServer(f, apiFuzzConfig)
	addr := strings.TrimPrefix(s.URL, "http://")

	f.Add("POST", "/v1/commands/args/run?a=x", "", "", []byte(nil), uint8(2))
	f.Add("POST", "/v1/commands/args/run", "application/json", "", []byte(`{"params":{"a":"x","b":1.5e3}}`), uint8(2))
	f.Add("POST", "/v1/commands/args/run?a=x", "", "text/event-stream", []byte(nil), uint8(2))
	f.Add("POST", "/v1/commands/args/run?a=x", "", "application/octet-stream;q=0.5, text/plain", []byte("body"), uint8(2))
	f.Add("GET", "/v1/jobs?state=running&limit=1000&after=01ARZ3NDEKTSV4RRFFQ69G5FAV", "", "", []byte(nil), uint8(2))
	f.Add("GET", "/v1/jobs?limit=-1&state=%00", "", "", []byte(nil), uint8(2))
	f.Add("GET", "/v1/jobs/../../etc/passwd", "", "", []byte(nil), uint8(2))
	f.Add("GET", "/v1/jobs/%2e%2e%2f%2e%2e/stdout?follow=maybe", "", "", []byte(nil), uint8(2))
	f.Add("GET", "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/events", "", "", []byte(nil), uint8(2))
	f.Add("DELETE", "/v1/jobs/"+strings.Repeat("9", 300), "", "", []byte(nil), uint8(1))
	f.Add("POST", "/v1/jobs/01arz3ndektsv4rrffq69g5fav/cancel", "", "", []byte(nil), uint8(0))
	f.Add("PATCH", "/v1/commands/%00/run", "", "", []byte(nil), uint8(2))
	f.Add("GET", "/v1/commands/ünï/run", "multipart/form-data; boundary=x", "*/*", []byte("--x--"), uint8(2))
	f.Add("POST", "/v1/commands/args/run?a=1&a=2", "application/json; charset=\"", "", []byte("{"), uint8(2))
	f.Add("BREW", "*", "", "", []byte(nil), uint8(0))
	f.Add("GET", "http://evil.example/v1/jobs", "", "", []byte(nil), uint8(2))
	f.Add("GET\x00", "/\r\nX: y", "\x7f", "\r\n", []byte(nil), uint8(2))
	f.Add("POST", "/v1/commands/args/run", "application/json", "", []byte(`{"params":{"a":"x"}}{"params":{}}`), uint8(2))

	f.Fuzz(func(t *testing.T, method, target, contentType, accept string, body []byte, auth uint8) {
		var token string
		switch auth % 3 {
		case 1:
			token = wrongToken
		case 2:
			token = opsToken
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nAccept: %s\r\nContent-Length: %d\r\n\r\n",
			method, target, token, contentType, accept, len(body))
		if _, err := io.WriteString(conn, req); err != nil {
			return // the server refused the bytes so far: no answer to judge
		}
		_, _ = conn.Write(body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("%q %q (type %q accept %q body %q): status %d", method, target, contentType, accept, body, resp.StatusCode)
			}
		}
		if l := s.serverLog.take(); strings.Contains(l, "panic") {
			t.Fatalf("net/http logged a panic:\n%s", l)
		}
		if l := s.log.take(); strings.Contains(l, `"level":"error"`) {
			t.Fatalf("the gateway logged an error:\n%s", l)
		}
	})
}
