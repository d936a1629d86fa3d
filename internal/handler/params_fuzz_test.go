package handler

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/execgw/execgw/internal/config"
)

// paramsFuzzConfig: printf prints each of its arguments after the format
// as one "[...]" line, so the output shows exactly where each value's
// argument begins and ends.
const paramsFuzzConfig = `
commands:
  args:
    argv: ["printf", "[%s]\n", "{a}", "{b}"]
    params:
      a: {required: true}
      b: {}
  upload:
    argv: ["printf", "[%s]\n", "{a}"]
    stdin: body
    params:
      a: {}
`

// FuzzReadParams decodes arbitrary query strings and bodies as a run's
// parameters, then binds them. Properties: no panic; every refusal is a
// 4xx; every value read is the one the client sent under that name; and
// after Bind each value is exactly one argv element of its own.
func FuzzReadParams(f *testing.F) {
	cfg, err := config.Parse(filepath.Join(f.TempDir(), "config.yaml"), []byte(paramsFuzzConfig))
	if err != nil {
		f.Fatalf("config.Parse: %v", err)
	}
	h := &handler{cfg: cfg}

	f.Add("a=x", "", []byte(nil), false)
	f.Add("a=a+b&b=%3B+rm+-rf+%2F", "", []byte(nil), false)
	f.Add("", "application/json", []byte(`{"params": {"a": "x y", "b": 12.50}}`), false)
	f.Add("a=1", "application/json; charset=utf-8", []byte(`{"params": {"b": true}}`), false)
	f.Add("a=1", "application/json", []byte(`{"params": {"a": "again"}}`), false)
	f.Add("", "application/json", []byte(`{"params": {"a": {"x": 1}}}`), false)
	f.Add("", "application/json", []byte(`{"params": {"a": "\u0000"}}`), false)
	f.Add("", "application/json", []byte(`{"params": {"a": "x"}} {}`), false)
	f.Add("", "application/json", []byte(`{"params": {`), false)
	f.Add("", "application/JSON", []byte(`{"a": "x"}`), false)
	f.Add("", "text/plain", []byte("a=x"), false)
	f.Add("a=%zz", "", []byte(nil), false)
	f.Add("a=%00", "", []byte(nil), false)
	f.Add("a=%ff%fe", "", []byte(nil), false)
	f.Add("a=1&a=2", "", []byte(nil), false)
	f.Add("a=x;b=y", "", []byte(nil), false)
	f.Add("a={b}&b={a}", "", []byte(nil), false)
	f.Add("a=x", "application/json", []byte(`{"params": {"a": "y"}}`), true)
	f.Add("a="+strings.Repeat("x", 5000), "", []byte(nil), false)
	f.Add(strings.Repeat("p=1&", 70), "", []byte(nil), false)

	f.Fuzz(func(t *testing.T, rawQuery, contentType string, body []byte, upload bool) {
		cmd := cfg.Commands["args"]
		if upload {
			cmd = cfg.Commands["upload"]
		}
		req := &http.Request{
			Method:        http.MethodPost,
			URL:           &url.URL{Path: "/v1/commands/" + cmd.Name + "/run", RawQuery: rawQuery},
			Header:        http.Header{"Content-Type": {contentType}},
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
		}
		values, err := h.readParams(req, cmd)
		if err != nil {
			if status := toAPIError(err).status; status < 400 || status >= 500 {
				t.Fatalf("readParams(%q, %q, %q) = %v, status %d; want a 4xx", rawQuery, contentType, body, err, status)
			}
			return
		}
		lim := cfg.Limits
		if len(values) > lim.MaxParams {
			t.Errorf("%d values read, beyond max_params %d", len(values), lim.MaxParams)
		}
		query, _ := url.ParseQuery(rawQuery)
		var jsonParams map[string]string
		if !upload { // an upload's body is its stdin, never parameters
			jsonParams = fuzzJSONParams(body)
		}
		for name, v := range values {
			if len(v) > lim.MaxParamBytes {
				t.Errorf("value of %q is %d bytes, beyond max_param_bytes", name, len(v))
			}
			q, inQuery := query[name]
			j, inJSON := jsonParams[name]
			switch {
			case inQuery && inJSON:
				t.Errorf("%q given in the query and the body was accepted", name)
			case inQuery:
				if len(q) != 1 || q[0] != v {
					t.Errorf("%q = %q, but the query says %q", name, v, q)
				}
			case inJSON:
				if j != v {
					t.Errorf("%q = %q, but the JSON body says %q", name, v, j)
				}
			default:
				t.Errorf("%q = %q was not sent", name, v)
			}
		}

		inv, err := cmd.Bind(values)
		if err != nil {
			if status := toAPIError(err).status; status != http.StatusBadRequest {
				t.Fatalf("Bind(%q) = %v, status %d; want 400", values, err, status)
			}
			return
		}
		var want []string
		if a, ok := values["a"]; ok {
			want = append(want, a)
		}
		if b, ok := values["b"]; ok {
			want = append(want, b)
		}
		want = append([]string{cmd.Path, "[%s]\n"}, want...)
		if !slices.Equal(inv.Argv, want) {
			t.Errorf("Bind(%q) argv = %q, want %q", values, inv.Argv, want)
		}
	})
}

// fuzzJSONParams is an independent reading of a body's "params" object:
// strings as they are, numbers with their digits, booleans as true/false.
func fuzzJSONParams(body []byte) map[string]string {
	var doc struct {
		Params map[string]any `json:"params"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range doc.Params {
		switch v := v.(type) {
		case string:
			out[k] = v
		case json.Number:
			out[k] = string(v)
		case bool:
			if v {
				out[k] = "true"
			} else {
				out[k] = "false"
			}
		}
	}
	return out
}

// TestRepeatedJSONParamIs400: encoding/json keeps the last of repeated
// keys, where a proxy or an audit trail may read the first; a parameter
// given twice is refused in a JSON body as in the query.
func TestRepeatedJSONParamIs400(t *testing.T) {
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "config.yaml"), []byte(paramsFuzzConfig))
	if err != nil {
		t.Fatal(err)
	}
	h := &handler{cfg: cfg}
	tests := []struct {
		body, want string // want: the named parameter, or "" for a success
	}{
		{`{"params": {"a": "x", "a": "y"}}`, `"a"`},
		{`{"params": {"a": "x", "\u0061": "y"}}`, `"a"`},
		{`{"params": {"a": "x", "b": "y", "b": 1}}`, `"b"`},
		{`{"params": {"a": "x"}, "params": {"b": "y"}}`, `"params"`},
		{`{"params": {"a": "x"}, "PARAMS": {"a": "y"}}`, `"params"`},
		{`{"params": null, "params": {"a": "y"}}`, `"params"`},
		{`{"params": {"a": "x", "b": "y"}}`, ""},
		{`{"params": {"a": "x", "A": "y"}}`, `"A"`}, // not a repeat: undeclared
		{`{"Params": {"a": "x"}}`, ""},
	}
	for _, tc := range tests {
		req := &http.Request{
			Method: "POST", URL: &url.URL{Path: "/"},
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(tc.body)), ContentLength: int64(len(tc.body)),
		}
		values, err := h.readParams(req, cfg.Commands["args"])
		if err == nil {
			_, err = cfg.Commands["args"].Bind(values)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("readParams(%s) = %v, want success", tc.body, err)
		case tc.want != "" && (err == nil || toAPIError(err).status != 400 || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("readParams(%s) = %v, want a 400 naming %s", tc.body, err, tc.want)
		}
	}
}
