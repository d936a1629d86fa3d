// Package webui is execgw's web page: one HTML document, its script and
// its style sheet, embedded in the binary. The page is plain HTML, CSS and
// JavaScript with no build step; it talks to the gateway's own /v1 API
// only, so it works under ContentSecurityPolicy, which allows nothing
// inline and nothing from another origin.
package webui

import (
	"embed"
	"path"
)

//go:embed index.html app.js app.css favicon.svg
var files embed.FS

// ContentSecurityPolicy is sent with the page and its assets: scripts,
// styles, images and requests from the gateway itself only, no inline
// script or style, no framing, forms posted nowhere else.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Index returns the page itself.
func Index() []byte {
	b, _ := files.ReadFile("index.html") // embedded: cannot fail
	return b
}

// Asset returns the named file the page loads (app.js, app.css,
// favicon.svg) and its content type; ok is false for any other name.
func Asset(name string) (body []byte, contentType string, ok bool) {
	contentType, known := contentTypes[path.Ext(name)]
	if !known || name == "index.html" {
		return nil, "", false
	}
	body, err := files.ReadFile(name)
	if err != nil {
		return nil, "", false
	}
	return body, contentType, true
}

var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}
