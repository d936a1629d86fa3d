// Package openapi describes the gateway's HTTP API as configured, as an
// OpenAPI 3.1 document: every endpoint of the contract, and one run
// operation per command with its parameters' declared types and
// constraints. The document is built from the configuration once, at
// start-up, one for each token (a token sees only the commands it may run).
package openapi

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/jobs"
)

// Version is the OpenAPI version of the documents.
const Version = "3.1.0"

// bearerScheme is the security scheme's name in the document.
const bearerScheme = "bearer"

// Names of the shared schemas under components.schemas.
const (
	schemaRecord    = "JobRecord"
	schemaRunResult = "RunResult"
	schemaError     = "Error"
	schemaJobList   = "JobList"
	schemaCommands  = "CommandList"
)

// Document builds the description of the API for a client that may run
// the commands allowed accepts (nil: every command).
func Document(cfg *config.Config, allowed func(command string) bool) *openapi3.T {
	withAuth := len(cfg.Auth.Tokens) > 0
	doc := &openapi3.T{
		OpenAPI: Version,
		Info: &openapi3.Info{
			Title:       "execgw",
			Version:     "1",
			Description: "Runs operator-configured commands on behalf of HTTP clients, and kills their process trees when nobody wants the result any more.",
		},
		Paths:      openapi3.NewPaths(),
		Components: &openapi3.Components{Schemas: schemas()},
	}
	if withAuth {
		doc.Components.SecuritySchemes = openapi3.SecuritySchemes{
			bearerScheme: &openapi3.SecuritySchemeRef{Value: openapi3.NewSecurityScheme().
				WithType("http").WithScheme("bearer").
				WithDescription("A token configured under auth.tokens, as Authorization: Bearer <token>.")},
		}
		doc.Security = openapi3.SecurityRequirements{openapi3.NewSecurityRequirement().Authenticate(bearerScheme)}
	}

	var names []any
	for _, name := range cfg.CommandNames() {
		if allowed != nil && !allowed(name) {
			continue
		}
		names = append(names, name)
		cmd := cfg.Commands[name]
		doc.Paths.Set("/v1/commands/"+name+"/run", &openapi3.PathItem{Post: runOperation(cmd, withAuth)})
	}

	b := builder{withAuth: withAuth}
	doc.Paths.Set("/v1/commands", &openapi3.PathItem{Get: b.op("listCommands", "The commands this client may run, with their parameter declarations.",
		nil, ok("The commands.", ref(schemaCommands)))})
	doc.Paths.Set("/v1/jobs", &openapi3.PathItem{Get: b.op("listJobs", "Jobs, newest first, a page at a time.",
		[]*openapi3.ParameterRef{
			query("state", "Only jobs in this state.", false, enumSchema(stateNames())),
			query("command", "Only jobs of this command.", false, commandSchema(names)),
			query("limit", "Page size.", false, intSchema(1, jobs.MaxPageSize)),
			query("after", "The next field of the previous page.", false, openapi3.NewStringSchema()),
		}, ok("A page of jobs.", ref(schemaJobList)))})
	jobID := &openapi3.ParameterRef{Value: openapi3.NewPathParameter("id").
		WithDescription("The job's id (a ULID).").WithSchema(openapi3.NewStringSchema())}
	doc.Paths.Set("/v1/jobs/{id}", &openapi3.PathItem{
		Get: b.op("getJob", "The job's record.", []*openapi3.ParameterRef{jobID}, ok("The record.", ref(schemaRecord))),
		Delete: b.op("deleteJob", "Removes a finished job and its output; 409 while it runs.", []*openapi3.ParameterRef{jobID},
			status(204, "Removed.", nil)),
	})
	follow := query("follow", "Stream until the job ends.", false, openapi3.NewBoolSchema())
	for _, s := range []string{"stdout", "stderr"} {
		doc.Paths.Set("/v1/jobs/{id}/"+s, &openapi3.PathItem{Get: b.op("job"+title(s), "The job's stored "+s+", raw.",
			[]*openapi3.ParameterRef{jobID, follow}, raw("The output.", "application/octet-stream"))})
	}
	doc.Paths.Set("/v1/jobs/{id}/events", &openapi3.PathItem{Get: b.op("jobEvents",
		"Server-Sent Events: the output so far, then live, one stdout or stderr event per line, then an exit event whose data is the record.",
		[]*openapi3.ParameterRef{jobID}, raw("The events.", "text/event-stream"))})
	doc.Paths.Set("/v1/jobs/{id}/cancel", &openapi3.PathItem{Post: b.op("cancelJob",
		"Cancels a queued or running job (cancel_reason user); answers once it has ended.",
		[]*openapi3.ParameterRef{jobID}, ok("The ended job's record.", ref(schemaRecord)))})

	doc.Paths.Set("/openapi.json", &openapi3.PathItem{Get: b.op("openapi", "This document.", nil,
		ok("The OpenAPI document.", &openapi3.SchemaRef{Value: openapi3.NewObjectSchema()}))})
	public := builder{}
	doc.Paths.Set("/healthz", &openapi3.PathItem{Get: public.open("healthz", "Liveness.", ok("Alive.", statusSchema()))})
	doc.Paths.Set("/readyz", &openapi3.PathItem{Get: public.open("readyz", "Readiness: 503 while draining.", ok("Ready.", statusSchema()))})
	doc.Paths.Set("/metrics", &openapi3.PathItem{Get: public.open("metrics", "Prometheus metrics.",
		raw("Prometheus text exposition.", "text/plain"))})
	doc.Paths.Set("/", &openapi3.PathItem{Get: public.open("page", "The web page.", raw("The page.", "text/html"))})
	return doc
}

// JSON is the document for a client that may run the commands allowed
// accepts, as served.
func JSON(cfg *config.Config, allowed func(command string) bool) ([]byte, error) {
	b, err := json.Marshal(Document(cfg, allowed))
	if err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	return b, nil
}

// runOperation is POST /v1/commands/{name}/run for one command.
func runOperation(cmd *config.Command, withAuth bool) *openapi3.Operation {
	b := builder{withAuth: withAuth}
	var params []*openapi3.ParameterRef
	body := openapi3.NewObjectSchema()
	body.AdditionalProperties = openapi3.AdditionalProperties{Has: new(bool)}
	for _, p := range cmd.Params {
		s := paramSchema(p)
		params = append(params, query(p.Name, p.Description, p.Required, s))
		body.Properties[p.Name] = &openapi3.SchemaRef{Value: s}
		if p.Required {
			body.Required = append(body.Required, p.Name)
		}
	}
	params = append(params,
		header("Prefer", "respond-async: start a detached job and answer 202 at once.", enumSchema([]any{"respond-async"})),
		header("Accept", "application/json (default), application/octet-stream or text/plain (stdout raw, trailers Execgw-Exit-Code and Execgw-State), text/event-stream (events stdout, stderr, exit).",
			openapi3.NewStringSchema()))

	desc := "Runs " + cmd.Name + "."
	if cmd.Description != "" {
		desc = cmd.Description + "."
	}
	desc += " Bound to the connection unless Prefer: respond-async is sent: a client that goes away cancels the job and kills its processes."
	op := b.op("run_"+cmd.Name, desc, params, nil)
	op.Summary = cmd.Description
	jobIDHeader := openapi3.Headers{"Execgw-Job-Id": headerRef("The job's id.")}
	op.Responses.Set("200", &openapi3.ResponseRef{Value: &openapi3.Response{
		Description: ptr("The job ended: its record (with its output when JSON), or its output streamed."),
		Headers:     jobIDHeader,
		Content: openapi3.Content{
			"application/json":         &openapi3.MediaType{Schema: ref(schemaRunResult)},
			"application/octet-stream": &openapi3.MediaType{Schema: binary()},
			"text/plain":               &openapi3.MediaType{Schema: binary()},
			"text/event-stream":        &openapi3.MediaType{Schema: openapi3.NewStringSchema().NewRef()},
		},
	}})
	op.Responses.Set("202", &openapi3.ResponseRef{Value: &openapi3.Response{
		Description: ptr("A detached job was accepted: its record."),
		Headers: openapi3.Headers{
			"Execgw-Job-Id": headerRef("The job's id."),
			"Location":      headerRef("/v1/jobs/{id}"),
		},
		Content: openapi3.NewContentWithJSONSchemaRef(ref(schemaRecord)),
	}})
	if cmd.Stdin == config.StdinBody {
		op.Description += " The request body is the command's standard input; parameters come from the query string."
		op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().
			WithDescription("The command's standard input, streamed.").
			WithContent(openapi3.Content{"application/octet-stream": &openapi3.MediaType{Schema: binary()}})}
	} else {
		op.Description += " Parameters come from the query string or, with Content-Type: application/json, from this body."
		params := openapi3.NewObjectSchema()
		params.Properties["params"] = &openapi3.SchemaRef{Value: body}
		op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().
			WithDescription("The parameters, instead of the query string.").
			WithJSONSchema(params)}
	}
	return op
}

// paramSchema is a parameter's declaration as a JSON Schema.
func paramSchema(p *config.Param) *openapi3.Schema {
	var s *openapi3.Schema
	switch p.Type {
	case config.TypeInt:
		s = openapi3.NewInt64Schema()
		if p.Min != nil {
			s.Min = ptr(float64(*p.Min))
		}
		if p.Max != nil {
			s.Max = ptr(float64(*p.Max))
		}
	case config.TypeBool:
		s = openapi3.NewBoolSchema()
	case config.TypeEnum:
		s = openapi3.NewStringSchema()
		for _, v := range p.Values {
			s.Enum = append(s.Enum, v)
		}
	default:
		s = openapi3.NewStringSchema()
		if p.Pattern != nil {
			s.Pattern = p.Pattern.String()
		}
		if p.MaxLen > 0 {
			s.MaxLength = ptr(uint64(p.MaxLen))
		}
	}
	s.Description = p.Description
	if p.Secret {
		s.Format = "password"
		s.WriteOnly = true
	}
	if p.Default != nil && !p.Secret {
		s.Default = typedDefault(p.Type, *p.Default)
	}
	return s
}

// typedDefault is a default (kept in its canonical string form) as the
// JSON value of the parameter's type.
func typedDefault(t config.ParamType, v string) any {
	switch t {
	case config.TypeInt:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	case config.TypeBool:
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	}
	return v
}

// builder makes operations that need the bearer token or not.
type builder struct{ withAuth bool }

// op is an operation of the API under /v1 (or as protected as it): it
// answers the contract's errors, 401 among them when tokens are in use.
func (b builder) op(id, desc string, params []*openapi3.ParameterRef, responses *openapi3.Responses) *openapi3.Operation {
	if responses == nil {
		responses = openapi3.NewResponses()
		responses.Delete("default")
	}
	codes := []int{400, 404, 429, 503}
	if b.withAuth {
		codes = append(codes, 401, 403)
	}
	if id == "deleteJob" {
		codes = append(codes, 409)
	}
	if len(id) > 4 && id[:4] == "run_" {
		codes = append(codes, 413)
	}
	for _, code := range codes {
		responses.Set(strconv.Itoa(code), &openapi3.ResponseRef{Value: openapi3.NewResponse().
			WithDescription(errorText[code]).WithJSONSchemaRef(ref(schemaError))})
	}
	return &openapi3.Operation{OperationID: id, Description: desc, Parameters: params, Responses: responses}
}

// open is an operation that never needs a token.
func (b builder) open(id, desc string, responses *openapi3.Responses) *openapi3.Operation {
	return &openapi3.Operation{OperationID: id, Description: desc, Responses: responses, Security: &openapi3.SecurityRequirements{}}
}

var errorText = map[int]string{
	400: "invalid_argument: a malformed request, or a bad or missing parameter.",
	401: "unauthenticated: a missing or wrong token.",
	403: "permission_denied: the token may not do this, or a cross-site request.",
	404: "not_found: an unknown command or job.",
	409: "conflict: the job is still running.",
	413: "payload_too_large: the body exceeds max_body.",
	429: "resource_exhausted: concurrency and queue full, or rate limited; see Retry-After.",
	503: "unavailable: draining for shutdown.",
}

func ok(desc string, schema *openapi3.SchemaRef) *openapi3.Responses {
	return status(200, desc, schema)
}

func status(code int, desc string, schema *openapi3.SchemaRef) *openapi3.Responses {
	r := openapi3.NewResponse().WithDescription(desc)
	if schema != nil {
		r = r.WithJSONSchemaRef(schema)
	}
	return openapi3.NewResponses(openapi3.WithName(strconv.Itoa(code), r))
}

func raw(desc, mediaType string) *openapi3.Responses {
	r := openapi3.NewResponse().WithDescription(desc).
		WithContent(openapi3.Content{mediaType: &openapi3.MediaType{Schema: openapi3.NewStringSchema().NewRef()}})
	return openapi3.NewResponses(openapi3.WithName("200", r))
}

func query(name, desc string, required bool, s *openapi3.Schema) *openapi3.ParameterRef {
	return &openapi3.ParameterRef{Value: openapi3.NewQueryParameter(name).
		WithDescription(desc).WithRequired(required).WithSchema(s)}
}

func header(name, desc string, s *openapi3.Schema) *openapi3.ParameterRef {
	return &openapi3.ParameterRef{Value: openapi3.NewHeaderParameter(name).WithDescription(desc).WithSchema(s)}
}

func headerRef(desc string) *openapi3.HeaderRef {
	return &openapi3.HeaderRef{Value: &openapi3.Header{Parameter: openapi3.Parameter{
		Description: desc, Schema: openapi3.NewStringSchema().NewRef(),
	}}}
}

func ref(name string) *openapi3.SchemaRef {
	return openapi3.NewSchemaRef("#/components/schemas/"+name, nil)
}

func binary() *openapi3.SchemaRef {
	s := openapi3.NewStringSchema()
	s.ContentMediaType = "application/octet-stream"
	return s.NewRef()
}

func intSchema(lo, hi int) *openapi3.Schema {
	return openapi3.NewIntegerSchema().WithMin(float64(lo)).WithMax(float64(hi))
}

func enumSchema(values []any) *openapi3.Schema {
	s := openapi3.NewStringSchema()
	s.Enum = values
	return s
}

func commandSchema(names []any) *openapi3.Schema {
	if len(names) == 0 {
		return openapi3.NewStringSchema()
	}
	return enumSchema(names)
}

func stateNames() []any {
	var out []any
	for _, s := range []jobs.State{jobs.Queued, jobs.Running, jobs.Succeeded, jobs.Failed, jobs.Canceled, jobs.TimedOut, jobs.Interrupted} {
		out = append(out, string(s))
	}
	return out
}

func statusSchema() *openapi3.SchemaRef {
	s := openapi3.NewObjectSchema()
	s.Properties["status"] = openapi3.NewStringSchema().NewRef()
	return s.NewRef()
}

func title(s string) string { return string(s[0]-'a'+'A') + s[1:] }

func ptr[T any](v T) *T { return &v }
