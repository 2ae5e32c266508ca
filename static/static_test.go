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
