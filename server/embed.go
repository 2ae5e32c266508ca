package main

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"canopy/static"
)

// embedRoutes serves the player for other sites: /embed/:stream is a page
// made to sit in an iframe (it sets no X-Frame-Options, so any site may frame
// it), and /embed.js defines the <canopy-player> web component. A page on
// another origin imports /embed.js and, through it, the modules under
// /static, so those answer with CORS headers. The signaling WebSocket from
// such a page still needs its origin in Config.AllowedOrigins.
//
// It must be called before the /static route is registered: Gin fixes a
// route's middleware when the route is added.
func (s *Server) embedRoutes(r *gin.Engine) {
	r.Use(shareAssets)
	r.GET("/embed/:stream", s.streamPage("stream", "embed.html"))
	r.GET("/embed.js", s.embedScript)
}

// shareAssets lets pages on any origin load the player's script and modules
// (module scripts are always fetched in CORS mode). They are public and
// carry no credentials, so "*" is safe.
func shareAssets(c *gin.Context) {
	if p := c.Request.URL.Path; p == "/embed.js" || strings.HasPrefix(p, "/static/") {
		c.Header("Access-Control-Allow-Origin", "*")
		c.Header("Cross-Origin-Resource-Policy", "cross-origin")
	}
	c.Next()
}

func (s *Server) embedScript(c *gin.Context) {
	data, err := fs.ReadFile(static.FS, "embed.js")
	if err != nil {
		writeError(c, http.StatusNotFound, errNotFound)
		return
	}
	c.Header("Cache-Control", "no-cache")
	c.Data(http.StatusOK, "text/javascript; charset=utf-8", data)
}
