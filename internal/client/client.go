// Package client is a small typed client of an execgw gateway's HTTP API,
// the one the execgw command's run, jobs, logs and cancel subcommands use.
//
// A Client holds one http.Client, and so one pool of keep-alive
// connections, for all the requests of a process. For that pool to work,
// every method reads each response body to its end and then closes it,
// error responses included: net/http puts a connection back into the pool
// only when the body of its last response was read to EOF before Close. A
// body closed early costs the connection, and the next request a new TCP
// (and TLS) handshake. Only a call cut short (its context cancelled, a
// timeout, a body far larger than expected) gives its connection up.
//
// Timeouts: dialing and TLS handshakes are bounded by the Transport. No
// call has an overall http.Client.Timeout, because it would cut streams: a
// bound run's events and a followed log last as long as the job. Instead
// each call has its own limit (see Client): a streaming call must get its
// response headers in time and may then run for as long as it needs; a
// call that does not stream must end, body included, in time.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/execgw/execgw/internal/api"
)

const (
	// maxErrorBody is as much of an error response as is read.
	maxErrorBody = 64 << 10
	// maxJSONBody bounds a JSON answer: a page of jobs.MaxPageSize records
	// stays far below it.
	maxJSONBody = 64 << 20
	// maxDrain is as much of an unread body as is read only to keep the
	// connection; anything longer is cheaper to drop with the connection.
	maxDrain = 256 << 10
)

// ErrTimeout is wrapped by the errors of calls that ran out of time.
var ErrTimeout = errors.New("the gateway did not answer in time")

// APIError is an error response of the gateway:
// {"error": {"code": "...", "message": "..."}}.
type APIError struct {
	Status  int    // HTTP status
	Code    string // the contract's error code; "" when the body had none
	Message string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
	}
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// Client talks to one gateway. Its methods may be called concurrently.
type Client struct {
	base  string // the server URL without a trailing slash
	token string
	hc    *http.Client

	// headerTimeout bounds the wait for the response headers of a
	// streaming call; the stream itself has no limit.
	headerTimeout time.Duration
	// callTimeout bounds a whole call that does not stream.
	callTimeout time.Duration
	// cancelTimeout bounds Cancel, which the gateway answers only once the
	// job has ended: after its command's kill_grace (default 5s) at worst.
	cancelTimeout time.Duration
}

// New returns a client of the gateway at server (http://host:port, maybe
// with a path prefix), sending token as a bearer token unless it is empty.
// Close releases its idle connections.
func New(server, token string) *Client {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second, // notices a gateway that vanished mid-stream
		}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
		// No ResponseHeaderTimeout: the limit differs per call (do).
	}
	return &Client{
		base:          strings.TrimRight(server, "/"),
		token:         token,
		hc:            &http.Client{Transport: tr},
		headerTimeout: 30 * time.Second,
		callTimeout:   30 * time.Second,
		cancelTimeout: 2 * time.Minute,
	}
}

// Close closes the client's idle keep-alive connections. Calls made after
// it open new ones.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
}

// Run runs the command name with params. With detach it starts a detached
// job and returns its record as the gateway answered (queued or running).
// Otherwise the run is bound to ctx: the command's standard output is
// copied to stdout byte for byte as it is produced (a raw stream), its
// standard error to stderr (the job's stored stderr, followed), and Run
// returns the record of the ended job. Cancelling ctx closes the
// connection, and the gateway then kills the process. stderr beyond the
// gateway's output_limit is not stored, so not copied.
func (c *Client) Run(ctx context.Context, name string, params map[string]string, detach bool, stdout, stderr io.Writer) (api.Job, error) {
	if params == nil {
		params = map[string]string{}
	}
	body, err := json.Marshal(struct {
		Params map[string]string `json:"params"`
	}{params})
	if err != nil {
		return api.Job{}, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/commands/"+url.PathEscape(name)+"/run", nil, body)
	if err != nil {
		return api.Job{}, err
	}
	req.Header.Set("Content-Type", "application/json")

	if detach {
		req.Header.Set("Prefer", "respond-async")
		req.Header.Set("Accept", "application/json")
		resp, err := c.do(req, c.callTimeout, false)
		if err != nil {
			return api.Job{}, err
		}
		defer closeBody(resp)
		var rec api.Job
		err = decodeJSON(resp, &rec)
		return rec, err
	}

	req.Header.Set("Accept", "application/octet-stream")
	resp, err := c.do(req, c.headerTimeout, true)
	if err != nil {
		return api.Job{}, err
	}
	defer closeBody(resp)
	id := resp.Header.Get("Execgw-Job-Id")
	if id == "" {
		return api.Job{}, fmt.Errorf("run %s: the answer names no job (Execgw-Job-Id)", name)
	}
	if err := checkMediaType(resp, "application/octet-stream"); err != nil {
		return api.Job{}, err
	}

	// stderr comes from the job's stored output, followed until the job
	// ends, beside the stream of stdout.
	errCtx, stopStderr := context.WithCancel(ctx)
	defer stopStderr()
	stderrDone := make(chan error, 1)
	go func() { // exits when the job has ended, or errCtx is cancelled
		if stderr == nil {
			stderr = io.Discard
		}
		stderrDone <- c.output(errCtx, id, "stderr", true, stderr)
	}()
	if stdout == nil {
		stdout = io.Discard
	}
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		stopStderr()
		<-stderrDone
		return api.Job{}, fmt.Errorf("job %s: stdout: %w", id, err)
	}
	// A stream cut short has no trailers: the job's end is unknown.
	if resp.Trailer.Get("Execgw-State") == "" {
		stopStderr()
		<-stderrDone
		return api.Job{}, fmt.Errorf("job %s: the stream ended before the job: %w", id, io.ErrUnexpectedEOF)
	}
	if err := <-stderrDone; err != nil {
		return api.Job{}, err
	}
	return c.Job(ctx, id)
}

// Job returns the record of job id.
func (c *Client) Job(ctx context.Context, id string) (api.Job, error) {
	return c.record(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), c.callTimeout)
}

// record sends a request without a body whose answer is a job record.
func (c *Client) record(ctx context.Context, method, path string, limit time.Duration) (api.Job, error) {
	req, err := c.newRequest(ctx, method, path, nil, nil)
	if err != nil {
		return api.Job{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req, limit, false)
	if err != nil {
		return api.Job{}, err
	}
	defer closeBody(resp)
	var rec api.Job
	err = decodeJSON(resp, &rec)
	return rec, err
}

// Jobs lists jobs, newest first, filtered by filter (state, command,
// limit, after: see GET /v1/jobs). next is the after value of the
// following page, "" on the last one.
func (c *Client) Jobs(ctx context.Context, filter url.Values) (list []api.Job, next string, err error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/jobs", filter, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req, c.callTimeout, false)
	if err != nil {
		return nil, "", err
	}
	defer closeBody(resp)
	var page api.JobList
	if err := decodeJSON(resp, &page); err != nil {
		return nil, "", err
	}
	return page.Jobs, page.Next, nil
}

// Logs copies the stored standard output of job id to w. With follow it
// goes on copying as the job writes, until the job ends.
func (c *Client) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	return c.output(ctx, id, "stdout", follow, w)
}

// output copies the stored stream (stdout or stderr) of job id to w,
// followed until the job ends when follow is set.
func (c *Client) output(ctx context.Context, id, stream string, follow bool, w io.Writer) error {
	var query url.Values
	if follow {
		query = url.Values{"follow": {"true"}}
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/"+stream, query, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := c.do(req, c.headerTimeout, true)
	if err != nil {
		return err
	}
	defer closeBody(resp)
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("job %s: %s: %w", id, stream, err)
	}
	return nil
}

// Cancel cancels job id and returns its record once it has ended; a job
// that had ended already is returned unchanged.
func (c *Client) Cancel(ctx context.Context, id string) (api.Job, error) {
	return c.record(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/cancel", c.cancelTimeout)
}

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Request, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var r io.Reader
	if body != nil {
		// A *bytes.Reader lets the transport replay the body when a
		// keep-alive connection turns out to have been closed meanwhile.
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "execgw-client")
	return req, nil
}

// do sends req with a time limit: on the response headers alone when
// stream is set, else on the whole exchange until the body is closed. A
// response that is not a 2xx is returned as an *APIError, its body read
// and closed; otherwise the caller must close the body with closeBody.
func (c *Client) do(req *http.Request, limit time.Duration, stream bool) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(limit, func() { cancel(ErrTimeout) })
	release := func() {
		timer.Stop()
		cancel(nil)
	}
	resp, err := c.hc.Do(req.WithContext(ctx))
	if err != nil {
		timedOut := errors.Is(context.Cause(ctx), ErrTimeout)
		release()
		if timedOut {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), ErrTimeout)
		}
		return nil, err
	}
	if stream {
		timer.Stop()
	}
	resp.Body = &timedBody{ReadCloser: resp.Body, ctx: ctx, release: release}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer closeBody(resp)
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// timedBody is a response body that reports a timeout as such and releases the
// call's timer and context when closed.
type timedBody struct {
	io.ReadCloser
	ctx     context.Context
	release func()
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && errors.Is(context.Cause(b.ctx), ErrTimeout) {
		err = ErrTimeout
	}
	return n, err
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// closeBody reads what is left of a body, up to maxDrain, and closes it,
// so that its connection can serve the next request.
func closeBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
}

// readAPIError makes an *APIError of an error response. A body that is not
// the contract's (a proxy's HTML page, say) leaves the status text.
func readAPIError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var wire struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &wire) == nil && wire.Error.Message != "" {
		e.Code, e.Message = wire.Error.Code, wire.Error.Message
		return e
	}
	e.Message = http.StatusText(resp.StatusCode)
	if e.Message == "" {
		e.Message = "unexpected response"
	}
	return e
}

func checkMediaType(resp *http.Response, want string) error {
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != want {
		return fmt.Errorf("%s %s: answer is %q, not %s", resp.Request.Method, resp.Request.URL.Redacted(), ct, want)
	}
	return nil
}

func decodeJSON(resp *http.Response, v any) error {
	if err := checkMediaType(resp, "application/json"); err != nil {
		return err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(v); err != nil {
		return fmt.Errorf("%s %s: %w", resp.Request.Method, resp.Request.URL.Redacted(), err)
	}
	return nil
}
