// Package static holds Canopy's browser client: the stream list (index.html),
// the player page (watch.html), the publish page (publish.html, WHIP from the
// browser), the iframe player (embed.html), the web component's entry script
// (embed.js), the stylesheet and the plain ES
// modules they run, embedded in the server binary. The server serves / from
// index.html, /watch/:stream from watch.html, /publish/:stream from
// publish.html, /embed/:stream from embed.html,
// /embed.js from embed.js and /static/*path from FS, so the pages refer to
// their assets as /static/css/… and /static/js/…. Unit tests of the modules
// live in test/, outside the embedded files.
package static

import "embed"

// FS holds the pages, embed.js, css/ and js/ (js/protocol.js mirrors mesh/protocol).
//
//go:embed *.html embed.js css js
var FS embed.FS
