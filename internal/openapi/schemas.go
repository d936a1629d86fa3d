package openapi

import "github.com/getkin/kin-openapi/openapi3"

// schemas are the shared schemas: the job record (every key always
// present, unset values null), a bound JSON run's answer, the error, the
// listings.
func schemas() openapi3.Schemas {
	nullable := func(s *openapi3.Schema) *openapi3.SchemaRef {
		s.Type.With("null")
		return s.NewRef()
	}
	str := func(desc string) *openapi3.SchemaRef {
		s := openapi3.NewStringSchema()
		s.Description = desc
		return s.NewRef()
	}
	dateTime := func(desc string) *openapi3.SchemaRef {
		s := openapi3.NewDateTimeSchema()
		s.Description = desc
		return nullable(s)
	}
	integer := func(desc string) *openapi3.Schema {
		s := openapi3.NewInt64Schema()
		s.Description = desc
		return s
	}

	record := openapi3.NewObjectSchema()
	record.Description = "A job: one run of a command, bound or detached."
	record.Properties = openapi3.Schemas{
		"id":      str("The job's id (a ULID)."),
		"command": str("The command's name."),
		"params": {Value: &openapi3.Schema{
			Type:                 &openapi3.Types{openapi3.TypeObject},
			Description:          "Effective parameter values, defaults included; secret ones are \"***\".",
			AdditionalProperties: openapi3.AdditionalProperties{Schema: openapi3.NewStringSchema().NewRef()},
		}},
		"state":             enumSchema(stateNames()).NewRef(),
		"exit_code":         nullable(integer("The exit code; null when a signal ended the process or none ran.")),
		"signal":            nullable(openapi3.NewStringSchema()),
		"cancel_reason":     nullable(enumSchema([]any{"client_disconnected", "user", "shutdown"})),
		"limit":             nullable(openapi3.NewStringSchema()),
		"pid":               nullable(integer("The process id of the command.")),
		"owner":             nullable(openapi3.NewStringSchema()),
		"node":              nullable(openapi3.NewStringSchema()),
		"created_at":        openapi3.NewDateTimeSchema().NewRef(),
		"started_at":        dateTime("When its process started."),
		"ended_at":          dateTime("Set for every ended state."),
		"duration_ms":       nullable(integer("From started to ended.")),
		"stdout_bytes":      integer("Bytes of stdout produced.").NewRef(),
		"stderr_bytes":      integer("Bytes of stderr produced.").NewRef(),
		"stdout_truncated":  openapi3.NewBoolSchema().NewRef(),
		"stderr_truncated":  openapi3.NewBoolSchema().NewRef(),
		"memory_peak_bytes": integer("Peak memory of the job's cgroup, where cgroups are in use.").NewRef(),
		"cpu_time_ms":       integer("CPU time of the job's cgroup, where cgroups are in use.").NewRef(),
	}
	// "node" appears in a cluster only, and the cgroup figures where
	// cgroups are in use; every other key always does.
	record.Required = []string{"id", "command", "params", "state", "exit_code", "signal", "cancel_reason", "pid",
		"created_at", "started_at", "ended_at", "duration_ms", "stdout_bytes", "stderr_bytes",
		"stdout_truncated", "stderr_truncated"}

	result := &openapi3.Schema{
		Description: "A bound JSON run's answer: the record with the output inlined.",
		AllOf: openapi3.SchemaRefs{ref(schemaRecord), {Value: &openapi3.Schema{
			Type:     &openapi3.Types{openapi3.TypeObject},
			Required: []string{"stdout", "stderr"},
			Properties: openapi3.Schemas{
				"stdout": str("The stored stdout."),
				"stderr": str("The stored stderr."),
			},
		}}},
	}

	errSchema := openapi3.NewObjectSchema()
	errSchema.Required = []string{"error"}
	detail := openapi3.NewObjectSchema()
	detail.Required = []string{"code", "message"}
	detail.Properties = openapi3.Schemas{
		"code": enumSchema([]any{"invalid_argument", "unauthenticated", "permission_denied", "not_found",
			"method_not_allowed", "conflict", "payload_too_large", "resource_exhausted", "unavailable", "internal"}).NewRef(),
		"message": str("What went wrong, naming the offending parameter or limit."),
	}
	errSchema.Properties = openapi3.Schemas{"error": detail.NewRef()}

	list := openapi3.NewObjectSchema()
	list.Required = []string{"jobs", "next"}
	list.Properties = openapi3.Schemas{
		"jobs": openapi3.NewArraySchema().WithItems(&openapi3.Schema{}).NewRef(),
		"next": str("The after value of the next page; empty on the last."),
	}
	list.Properties["jobs"].Value.Items = ref(schemaRecord)

	param := openapi3.NewObjectSchema()
	param.Required = []string{"name", "type", "required"}
	param.Properties = openapi3.Schemas{
		"name":        openapi3.NewStringSchema().NewRef(),
		"type":        enumSchema([]any{"string", "int", "bool", "enum"}).NewRef(),
		"description": openapi3.NewStringSchema().NewRef(),
		"required":    openapi3.NewBoolSchema().NewRef(),
		"default":     openapi3.NewStringSchema().NewRef(),
		"pattern":     openapi3.NewStringSchema().NewRef(),
		"max_len":     openapi3.NewInt64Schema().NewRef(),
		"min":         openapi3.NewInt64Schema().NewRef(),
		"max":         openapi3.NewInt64Schema().NewRef(),
		"values":      openapi3.NewArraySchema().WithItems(openapi3.NewStringSchema()).NewRef(),
		"secret":      openapi3.NewBoolSchema().NewRef(),
	}
	command := openapi3.NewObjectSchema()
	command.Required = []string{"name", "params", "stdin"}
	command.Properties = openapi3.Schemas{
		"name":        openapi3.NewStringSchema().NewRef(),
		"description": openapi3.NewStringSchema().NewRef(),
		"params":      openapi3.NewArraySchema().WithItems(param).NewRef(),
		"stdin":       enumSchema([]any{"none", "body"}).NewRef(),
		"timeout":     openapi3.NewStringSchema().NewRef(),
	}
	commands := openapi3.NewObjectSchema()
	commands.Required = []string{"commands"}
	commands.Properties = openapi3.Schemas{"commands": openapi3.NewArraySchema().WithItems(command).NewRef()}

	return openapi3.Schemas{
		schemaRecord:    record.NewRef(),
		schemaRunResult: result.NewRef(),
		schemaError:     errSchema.NewRef(),
		schemaJobList:   list.NewRef(),
		schemaCommands:  commands.NewRef(),
	}
}
