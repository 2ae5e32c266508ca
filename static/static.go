// Package static holds Canopy's browser client: the stream list (index.html),
// the player page (watch.html), its stylesheet and the plain ES modules it
// runs, embedded in the server binary. The server serves / from index.html,
// /watch/:stream from watch.html and /static/*path from FS, so the pages
// refer to their assets as /static/css/… and /static/js/….
package static

import "embed"

// FS holds index.html, watch.html, css/ and js/ (js/protocol.js mirrors mesh/protocol).
//
//go:embed index.html watch.html stats.html css js
var FS embed.FS
