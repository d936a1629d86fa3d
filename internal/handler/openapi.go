package handler

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/execgw/execgw/internal/config"
	"github.com/execgw/execgw/internal/openapi"
)

// apiDocs are the OpenAPI documents, built once at start-up: one for
// everyone when no tokens are configured, else one per token, holding
// only the commands that token may run.
type apiDocs struct {
	open    []byte
	byToken map[string][]byte
}

func newAPIDocs(cfg *config.Config) (*apiDocs, error) {
	d := &apiDocs{byToken: map[string][]byte{}}
	if len(cfg.Auth.Tokens) == 0 {
		b, err := openapi.JSON(cfg, nil)
		if err != nil {
			return nil, err
		}
		d.open = b
		return d, nil
	}
	for i := range cfg.Auth.Tokens {
		tok := &cfg.Auth.Tokens[i]
		b, err := openapi.JSON(cfg, func(command string) bool { return mayRun(tok, command) })
		if err != nil {
			return nil, err
		}
		d.byToken[tok.Name] = b
	}
	return d, nil
}

// openAPI is GET /openapi.json. Behind authenticate, like /v1: a token
// sees only what it may run.
func (h *handler) openAPI(c echo.Context) error {
	if h.docsErr != nil {
		return h.docsErr
	}
	doc := h.docs.open
	if tok := requestToken(c); tok != nil {
		doc = h.docs.byToken[tok.Name]
	}
	return c.JSONBlob(http.StatusOK, doc)
}
