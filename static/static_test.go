package static

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// TestPagesReferToEmbeddedAssets checks that every /static/ path a page or
// module names is in FS, so a renamed file fails here rather than in a browser.
func TestPagesReferToEmbeddedAssets(t *testing.T) {
	ref := regexp.MustCompile(`(?:href|src)="/static/([^"]+)"`)
	imp := regexp.MustCompile(`from '\./([^']+)'`)
	for _, page := range []string{"index.html", "watch.html", "embed.html"} {
		data, err := fs.ReadFile(FS, page)
		if err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		refs := ref.FindAllStringSubmatch(string(data), -1)
		if len(refs) == 0 {
			t.Errorf("%s refers to no assets", page)
		}
		for _, m := range refs {
			if _, err := fs.Stat(FS, m[1]); err != nil {
				t.Errorf("%s refers to /static/%s, which is not embedded", page, m[1])
			}
		}
	}
	mods, err := fs.Glob(FS, "js/*.js")
	if err != nil || len(mods) == 0 {
		t.Fatalf("no modules embedded: %v", err)
	}
	for _, mod := range mods {
		data, err := fs.ReadFile(FS, mod)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range imp.FindAllStringSubmatch(string(data), -1) {
			if strings.HasPrefix(m[1], "node:") {
				continue
			}
			if _, err := fs.Stat(FS, "js/"+m[1]); err != nil {
				t.Errorf("%s imports ./%s, which is not embedded", mod, m[1])
			}
		}
	}
}

// TestPagesPreloadTheirModuleGraph checks that the player pages list every
// module their entry imports, directly or not, as a modulepreload: the
// browser then fetches the graph at once instead of one import level per
// round trip, which is most of a page's time to first frame.
func TestPagesPreloadTheirModuleGraph(t *testing.T) {
	imp := regexp.MustCompile(`from '\./([^']+\.js)'`)
	entry := regexp.MustCompile(`<script type="module" src="/static/js/([^"]+)">`)
	preload := regexp.MustCompile(`<link rel="modulepreload" href="/static/js/([^"]+)">`)
	for _, page := range []string{"watch.html", "embed.html"} {
		data, err := fs.ReadFile(FS, page)
		if err != nil {
			t.Fatal(err)
		}
		m := entry.FindStringSubmatch(string(data))
		if m == nil {
			t.Fatalf("%s has no module entry", page)
		}
		listed := map[string]bool{}
		for _, p := range preload.FindAllStringSubmatch(string(data), -1) {
			listed[p[1]] = true
		}
		seen := map[string]bool{}
		queue := []string{m[1]}
		for len(queue) > 0 {
			mod := queue[0]
			queue = queue[1:]
			src, err := fs.ReadFile(FS, "js/"+mod)
			if err != nil {
				t.Fatalf("%s imports %s: %v", page, mod, err)
			}
			for _, i := range imp.FindAllStringSubmatch(string(src), -1) {
				if !seen[i[1]] {
					seen[i[1]] = true
					queue = append(queue, i[1])
				}
			}
		}
		for mod := range seen {
			if !listed[mod] {
				t.Errorf("%s does not preload %s, which its entry imports", page, mod)
			}
		}
	}
}
