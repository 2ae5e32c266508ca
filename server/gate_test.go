package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"canopy/mesh/protocol"
)

// get fetches url with an optional bearer token and returns status and body.
func get(t *testing.T, url, bearer string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, string(body)
}

func streamIDs(t *testing.T, body string) []string {
	t.Helper()
	var list []streamInfo
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("stream list %q: %v", body, err)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids
}

// TestPrivateStreamsDoNotLeak runs a private stream with a source and a
// viewer next to a public one, then asks every HTTP entry point about it
// without a token, with another stream's token, with a bad token and with
// its own. Without a grant the private stream must be indistinguishable
// from a stream that does not exist; with it, everything is served.
func TestPrivateStreamsDoNotLeak(t *testing.T) {
	lightTest(t)
	s, url := startServerWith(t, Config{Auth: authConfig()})
	pub := signHS256(t, claims("private", true, time.Hour))
	src := dialLive(t, url, nil)
	src.send(hello(protocol.RoleSource, protocol.KindGo, "private", 4, pub))
	src.next(protocol.TypeWelcome)
	viewer := dialLive(t, url, nil)
	viewer.send(hello(protocol.RoleViewer, protocol.KindGo, "private", 0, signHS256(t, claims("private", false, time.Hour))))
	viewer.next(protocol.TypeWelcome)
	open := dialLive(t, url, nil)
	open.send(hello(protocol.RoleSource, protocol.KindGo, "live", 4, signHS256(t, claims("live", true, time.Hour))))
	open.next(protocol.TypeWelcome)
	waitFor(t, 10*time.Second, "both streams exist", func() bool {
		return s.hub.get("private") != nil && s.hub.get("live") != nil && len(s.hub.get("private").snapshot()) == 2
	})

	own := signHS256(t, claims("private", false, time.Hour))
	other := signHS256(t, claims("live", false, time.Hour))

	// The list: the private stream only for a token that covers it.
	for _, c := range []struct {
		what, token string
		want        []string
	}{
		{"no token", "", []string{"live"}},
		{"another stream's token", other, []string{"live"}},
		{"its token", own, []string{"live", "private"}},
		{"a token for any stream", signHS256(t, claims("*", false, time.Hour)), []string{"live", "private"}},
	} {
		status, body := get(t, url+"/api/streams", c.token)
		if status != http.StatusOK {
			t.Fatalf("/api/streams with %s: %d %s", c.what, status, body)
		}
		if got := streamIDs(t, body); !slices.Equal(got, c.want) {
			t.Errorf("/api/streams with %s lists %v, want %v", c.what, got, c.want)
		}
	}
	if status, _ := get(t, url+"/api/streams", "not-a-token"); status != http.StatusUnauthorized {
		t.Errorf("/api/streams with a bad token: %d, want 401", status)
	}

	// Per-stream entry points: without a grant, the very answer a stream
	// that does not exist gets.
	for _, path := range []string{"/api/streams/%s/tree", "/api/streams/%s/stats", "/stats/%s", "/watch/%s", "/embed/%s", "/readyz?stream=%s"} {
		at := func(stream string) string { return url + fmt.Sprintf(path, stream) }
		missStatus, missBody := get(t, at("nosuchstream"), "")
		for _, c := range []struct{ what, token string }{{"no token", ""}, {"another stream's token", other}} {
			status, body := get(t, at("private"), c.token)
			body = strings.ReplaceAll(body, "private", "nosuchstream")
			if status != missStatus || body != missBody {
				t.Errorf("%s with %s: %d %q; a missing stream gets %d %q", fmt.Sprintf(path, "private"), c.what, status, body, missStatus, missBody)
			}
		}
		if status, body := get(t, at("private"), own); status != http.StatusOK {
			t.Errorf("%s with its token: %d %s", fmt.Sprintf(path, "private"), status, body)
		}
		if status, body := get(t, withToken(at("private"), own), ""); status != http.StatusOK {
			t.Errorf("%s with ?token=: %d %s", fmt.Sprintf(path, "private"), status, body)
		}
		if status, _ := get(t, at("private"), "not-a-token"); status != http.StatusUnauthorized && !strings.HasPrefix(path, "/readyz") {
			t.Errorf("%s with a bad token: %d, want 401", fmt.Sprintf(path, "private"), status)
		}
	}
	var tr treeResponse
	status, body := get(t, url+"/api/streams/private/tree", own)
	if err := json.Unmarshal([]byte(body), &tr); err != nil || status != http.StatusOK || len(tr.Nodes) != 2 {
		t.Errorf("the private tree with its token: %d %s", status, body)
	}

	// /ws: a hello without a grant is refused as not_found, and counted as
	// a refused join on the stream's figures and in /metrics.
	for range 2 {
		p := dialLive(t, url, nil)
		p.send(hello(protocol.RoleViewer, protocol.KindBrowser, "private", 0, ""))
		if m := p.next(protocol.TypeError); m.Code != protocol.CodeNotFound || m.Reason != errNoStream.Error() {
			t.Errorf("/ws hello for the private stream: %s %q, want not_found like a missing stream", m.Code, m.Reason)
		}
		p.waitClosed("refused hello")
	}
	var st statsResponse
	_, body = get(t, url+"/api/streams/private/stats", own)
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Figures.Joins[outcomeRefused] != 2 {
		t.Errorf("the private stream's figures count %d refused joins, want 2: %v", st.Figures.Joins[outcomeRefused], st.Figures.Joins)
	}
	expectMetric(t, scrape(t, url), 2, "canopy_joins_total", "role", "viewer", "outcome", "refused")
}

// withToken adds ?token= (or &token=) to url.
func withToken(url, token string) string {
	if strings.Contains(url, "?") {
		return url + "&token=" + token
	}
	return url + "?token=" + token
}
