package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"

	"github.com/execgw/execgw/internal/config"
)

// maxJSONBody bounds a JSON parameter body: parameters are small, and a
// large body here is abuse, whatever max_body allows for stdin.
const maxJSONBody = 1 << 20

// paramsRequest is the JSON body form of a run's parameters.
type paramsRequest struct {
	Params map[string]json.RawMessage `json:"params"`
}

// readParams collects a run's parameters from the query string and, unless
// the body is the command's stdin, from a JSON body. Any other body is read
// and discarded: only a request read to its end notices its client leave.
func (h *handler) readParams(req *http.Request, cmd *config.Command) (map[string]string, error) {
	lim := h.cfg.Limits
	if len(req.URL.RawQuery) > lim.MaxQueryBytes {
		return nil, errInvalid("query string exceeds max_query_bytes (%d bytes)", lim.MaxQueryBytes)
	}
	query, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		return nil, errInvalid("malformed query string: %v", queryErrorText(err))
	}
	values := make(map[string]string, len(query))
	for name, vs := range query {
		if len(vs) > 1 {
			return nil, &config.ParamError{Name: name, Reason: "is given more than once"}
		}
		values[name] = vs[0]
	}
	if cmd.Stdin != config.StdinBody {
		body, err := h.readBodyParams(req)
		if err != nil {
			return nil, err
		}
		for name, v := range body {
			if _, dup := values[name]; dup {
				return nil, &config.ParamError{Name: name, Reason: "is given more than once"}
			}
			values[name] = v
		}
	}
	if len(values) > lim.MaxParams {
		return nil, errInvalid("more than max_params (%d) parameters", lim.MaxParams)
	}
	for name, v := range values {
		if len(v) > lim.MaxParamBytes {
			return nil, &config.ParamError{Name: name, Reason: fmt.Sprintf("exceeds max_param_bytes (%d bytes)", lim.MaxParamBytes)}
		}
	}
	return values, nil
}

func (h *handler) readBodyParams(req *http.Request) (map[string]string, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	mediaType, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if mediaType != "application/json" {
		n, err := io.Copy(io.Discard, http.MaxBytesReader(nil, req.Body, h.cfg.MaxBody))
		if err != nil {
			return nil, bodyError(err, h.cfg.MaxBody)
		}
		if n > 0 {
			return nil, errInvalid("a request body must be JSON (Content-Type: application/json) unless the command reads stdin")
		}
		return nil, nil
	}
	raw, err := io.ReadAll(http.MaxBytesReader(nil, req.Body, maxJSONBody))
	if err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			// Not max_body, which bounds stdin: name the limit that applies.
			return nil, newError(codePayloadTooLarge, fmt.Sprintf("a JSON parameter body exceeds %d bytes", maxJSONBody))
		}
		return nil, bodyError(err, maxJSONBody)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var body paramsRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return nil, errInvalid("malformed JSON body: %v", jsonErrorText(err))
	}
	if dec.More() {
		return nil, errInvalid("malformed JSON body: more than one JSON value")
	}
	// encoding/json keeps the last of repeated keys; a proxy or an audit
	// log may read the first. A repeated parameter is a 400 in the body as
	// in the query.
	if name, ok := repeatedParam(raw); ok {
		if name == "" {
			return nil, errInvalid(`malformed JSON body: "params" is given more than once`)
		}
		return nil, &config.ParamError{Name: name, Reason: "is given more than once"}
	}
	values := make(map[string]string, len(body.Params))
	for name, rawValue := range body.Params {
		v, err := jsonScalar(rawValue)
		if err != nil {
			return nil, &config.ParamError{Name: name, Reason: err.Error()}
		}
		values[name] = v
	}
	return values, nil
}

// repeatedParam finds a key given twice in the "params" object of a body
// that has already decoded as a paramsRequest; name is "" when "params"
// itself is repeated. Every top-level key is "params" then, whatever its
// case: encoding/json matches field names case-insensitively.
func repeatedParam(raw []byte) (name string, repeated bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	for keys := 0; dec.More(); keys++ {
		if _, err := dec.Token(); err != nil {
			return "", false
		}
		if keys > 0 {
			return "", true
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('{') {
			continue // null: nothing in it to repeat
		}
		seen := map[string]bool{}
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return "", false
			}
			name, _ := t.(string)
			if seen[name] {
				return name, true
			}
			seen[name] = true
			var value json.RawMessage
			if dec.Decode(&value) != nil {
				return "", false
			}
		}
		if _, err := dec.Token(); err != nil { // the closing '}'
			return "", false
		}
	}
	return "", false
}

// jsonScalar turns a JSON string, number or boolean into the parameter's
// text; numbers keep their exact digits.
func jsonScalar(raw json.RawMessage) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", errors.New("is not valid JSON")
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", errors.New("must be a string, a number or a boolean")
}

func bodyError(err error, limit int64) error {
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return errTooLarge(limit)
	}
	// The client sent less than it announced or broke off: its fault, a 400.
	return errInvalid("the request body could not be read to its end")
}

// queryErrorText and jsonErrorText keep client-facing messages to the
// point, without Go type names.
func queryErrorText(err error) string {
	var esc url.EscapeError
	if errors.As(err, &esc) {
		return fmt.Sprintf("invalid escape %q", string(esc))
	}
	return "cannot be parsed"
}

func jsonErrorText(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected end of input"
	}
	return err.Error()
}
