package openapi_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/openapi"
)

const testConfig = `
auth:
  tokens:
    - {name: ops, sha256: "` + zeros + `", commands: ["*"]}
    - {name: dd-only, sha256: "` + ones + `", commands: [dd]}
commands:
  dd:
    description: Copy zeros
    argv: [dd, "if=/dev/zero", "of=/dev/null", "bs={bs}", "count={count}"]
    params:
      bs: {pattern: '^[0-9]+[KMG]?$', default: "1M", max_len: 8}
      count: {type: int, min: 1, max: 1000000, required: true}
  deploy:
    argv: [echo, "{env}", "{dry}", "{password}"]
    params:
      env: {type: enum, values: [staging, prod], default: staging}
      dry: {type: bool, default: "true"}
      password: {secret: true}
  upload:
    argv: [cat]
    stdin: body
`

const (
	zeros = "0000000000000000000000000000000000000000000000000000000000000000"
	ones  = "1111111111111111111111111111111111111111111111111111111111111111"
)

func load(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "config.yaml"), []byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return cfg
}

// parse reads the served JSON back as a client would and validates it as
// OpenAPI 3.1, examples and defaults against their schemas included.
func parse(t *testing.T, data []byte) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		t.Fatalf("load document: %v\n%s", err, data)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableSchemaDefaultsValidation(),
		openapi3.EnableSchemaPatternValidation(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("Validate: %v\n%s", err, data)
	}
	if !doc.IsOpenAPI31OrLater() || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	return doc
}

func TestDocumentValidates(t *testing.T) {
	cfg := load(t, testConfig)
	data, err := openapi.JSON(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := parse(t, data)

	for _, path := range []string{"/v1/commands", "/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/stdout", "/v1/jobs/{id}/stderr",
		"/v1/jobs/{id}/events", "/v1/jobs/{id}/cancel", "/healthz", "/readyz", "/metrics", "/openapi.json", "/",
		"/v1/commands/dd/run", "/v1/commands/deploy/run", "/v1/commands/upload/run"} {
		if doc.Paths.Value(path) == nil {
			t.Errorf("path %s missing", path)
		}
	}
	if doc.Paths.Value("/v1/jobs/{id}").Delete == nil {
		t.Error("DELETE /v1/jobs/{id} missing")
	}
	for _, name := range []string{"JobRecord", "Error", "RunResult", "JobList"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("schema %s missing", name)
		}
	}
	if s := doc.Components.SecuritySchemes["bearer"]; s == nil || s.Value.Type != "http" || s.Value.Scheme != "bearer" {
		t.Errorf("bearer security scheme = %+v", s)
	}
	if health := doc.Paths.Value("/healthz").Get; health.Security == nil || len(*health.Security) != 0 {
		t.Errorf("/healthz security = %v, want none (an empty list)", health.Security)
	}
	exitCode := doc.Components.Schemas["JobRecord"].Value.Properties["exit_code"].Value
	if !exitCode.Type.Includes("integer") || !exitCode.Type.IncludesNull() {
		t.Errorf("exit_code type = %v, want integer or null", exitCode.Type)
	}
}

func TestParametersCarryTheirDeclarations(t *testing.T) {
	doc := parse(t, must(openapi.JSON(load(t, testConfig), nil)))
	param := func(command, name string) (*openapi3.Parameter, *openapi3.Schema) {
		t.Helper()
		op := doc.Paths.Value("/v1/commands/" + command + "/run").Post
		p := op.Parameters.GetByInAndName("query", name)
		if p == nil {
			t.Fatalf("%s: query parameter %s missing", command, name)
		}
		return p, p.Schema.Value
	}

	p, s := param("dd", "count")
	if !p.Required || !s.Type.Is("integer") || s.Min == nil || *s.Min != 1 || s.Max == nil || *s.Max != 1000000 {
		t.Errorf("count: required %v, schema %s", p.Required, js(s))
	}
	p, s = param("dd", "bs")
	if p.Required || !s.Type.Is("string") || s.Pattern != "^[0-9]+[KMG]?$" || s.MaxLength == nil || *s.MaxLength != 8 || s.Default != "1M" {
		t.Errorf("bs: required %v, schema %s", p.Required, js(s))
	}
	_, s = param("deploy", "env")
	if !slices.Equal(s.Enum, []any{"staging", "prod"}) || s.Default != "staging" {
		t.Errorf("env: schema %s", js(s))
	}
	_, s = param("deploy", "dry")
	if !s.Type.Is("boolean") || s.Default != true {
		t.Errorf("dry: schema %s", js(s))
	}
	_, s = param("deploy", "password")
	if s.Format != "password" || s.Default != nil {
		t.Errorf("password: schema %s", js(s))
	}

	// The JSON body says the same.
	body := doc.Paths.Value("/v1/commands/dd/run").Post.RequestBody.Value.Content.Get("application/json").Schema.Value
	params := body.Properties["params"].Value
	if !slices.Equal(params.Required, []string{"count"}) || params.Properties["count"].Value.Max == nil {
		t.Errorf("dd body: %s", js(params))
	}
	upload := doc.Paths.Value("/v1/commands/upload/run").Post.RequestBody.Value
	if upload.Content.Get("application/octet-stream") == nil {
		t.Errorf("upload body: %s", js(upload))
	}
}

func TestTokenSeesOnlyItsCommands(t *testing.T) {
	cfg := load(t, testConfig)
	only := func(name string) bool { return name == "dd" }
	doc := parse(t, must(openapi.JSON(cfg, only)))
	var runs []string
	for path := range doc.Paths.Map() {
		if strings.HasSuffix(path, "/run") {
			runs = append(runs, path)
		}
	}
	if !slices.Equal(runs, []string{"/v1/commands/dd/run"}) {
		t.Errorf("run paths = %v, want only dd's", runs)
	}
	command := doc.Paths.Value("/v1/jobs").Get.Parameters.GetByInAndName("query", "command").Schema.Value
	if !slices.Equal(command.Enum, []any{"dd"}) {
		t.Errorf("command filter enum = %v, want [dd]", command.Enum)
	}
}

func TestOpenGatewayHasNoSecurity(t *testing.T) {
	doc := parse(t, must(openapi.JSON(load(t, "commands:\n  hello:\n    argv: [echo, hello]\n"), nil)))
	if len(doc.Security) != 0 || len(doc.Components.SecuritySchemes) != 0 {
		t.Errorf("security = %v, schemes = %v; want none without tokens", doc.Security, doc.Components.SecuritySchemes)
	}
	if doc.Paths.Value("/v1/commands/hello/run").Post.Responses.Value("401") != nil {
		t.Error("a 401 is described on a gateway without tokens")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
