package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// getJSON fetches url and decodes its JSON body; it returns the status.
func getJSON(url string, v any) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if v != nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(b, v)
	}
	return resp.StatusCode, err
}

// stopped reports whether p's process is stopped (SIGSTOP has landed:
// /proc/<pid>/stat says T).
func stopped(p *proc) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'T'
}

// ownerAt is the owner a server names in the stream's tree ("" if none).
func ownerAt(url, stream string) string {
	var body struct {
		Owner string `json:"owner"`
	}
	if code, err := getJSON(url+"/api/streams/"+stream+"/tree", &body); code != http.StatusOK || err != nil {
		return ""
	}
	return body.Owner
}

// streamListed reads /api/streams at url and returns the stream's entry.
func streamListed(url, stream string) (viewers int, live, ok bool) {
	var list []struct {
		ID      string `json:"id"`
		Viewers int    `json:"viewers"`
		Live    bool   `json:"live"`
	}
	if code, err := getJSON(url+"/api/streams", &list); code != http.StatusOK || err != nil {
		return 0, false, false
	}
	for _, s := range list {
		if s.ID == stream {
			return s.Viewers, s.Live, true
		}
	}
	return 0, false, false
}

// TestClusterAPIFromAnyServer: the stream is owned by server 1, with a
// relay through server 3 and a viewer through server 2. Every server
// answers its tree (equal to the owner's), its figures, its readiness and
// the cluster's stream list; an unknown stream is 404 everywhere; and
// while the owner is stopped a non-owner answers 503, not 404.
func TestClusterAPIFromAnyServer(t *testing.T) {
	// A long lease: the owner is stopped for a few seconds below and must
	// keep its stream.
	servers := startCluster(t, 3, "-lease-ttl", "12s")
	_, client := binaries(t)
	const stream = "anyapi"
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	start(t, "source", client, "broadcast", "-server", s1, "-stream", stream, "-capacity", "1", "-loopback-only")
	waitFor(t, 30*time.Second, "the source at server 1", func() bool { return ownerAt(s1, stream) == "s1" })
	start(t, "relay", client, "relay", "-server", s3, "-stream", stream, "-capacity", "2", "-loopback-only")
	start(t, "viewer", client, "watch", "-server", s2, "-stream", stream, "-timeout", "3m", "-loopback-only")
	waitFor(t, 60*time.Second, "relay and viewer in the tree", func() bool {
		nodes, ok := treeAt(s1, stream)
		return ok && len(nodes) == 3
	})

	// The tree from each server equals the owner's: read the owner's
	// before and after, and compare once the tree held still between.
	for _, other := range []*server{servers[1], servers[2]} {
		var ownerTree, otherTree, again any
		waitFor(t, 30*time.Second, other.id+"'s tree equal to the owner's", func() bool {
			if c, _ := getJSON(s1+"/api/streams/"+stream+"/tree", &ownerTree); c != http.StatusOK {
				return false
			}
			if c, _ := getJSON(other.url+"/api/streams/"+stream+"/tree", &otherTree); c != http.StatusOK {
				return false
			}
			_, _ = getJSON(s1+"/api/streams/"+stream+"/tree", &again)
			return reflect.DeepEqual(ownerTree, again) && reflect.DeepEqual(ownerTree, otherTree)
		})
		if got := ownerAt(other.url, stream); got != "s1" {
			t.Errorf("%s names owner %q, want s1", other.id, got)
		}
		var stats struct {
			Stream string            `json:"stream"`
			Nodes  []json.RawMessage `json:"nodes"`
		}
		if c, err := getJSON(other.url+"/api/streams/"+stream+"/stats", &stats); c != http.StatusOK || err != nil || len(stats.Nodes) != 3 {
			t.Errorf("%s stats: status %d, %v, %d nodes, want 200 and 3", other.id, c, err, len(stats.Nodes))
		}
		if c, _ := getJSON(other.url+"/readyz?stream="+stream, nil); c != http.StatusOK {
			t.Errorf("%s /readyz?stream=%s: %d, want 200", other.id, stream, c)
		}
		if c, _ := getJSON(other.url+"/api/streams/nosuch/tree", nil); c != http.StatusNotFound {
			t.Errorf("%s tree of an unknown stream: %d, want 404", other.id, c)
		}
		if c, _ := getJSON(other.url+"/api/streams/a.b/tree", nil); c != http.StatusNotFound {
			t.Errorf("%s tree of an invalid name: %d, want 404", other.id, c)
		}
		waitFor(t, 30*time.Second, other.id+" listing the stream with its 2 viewers", func() bool {
			viewers, live, ok := streamListed(other.url, stream)
			return ok && live && viewers == 2
		})
	}

	// The owner stopped: its lease lives, so the stream is not gone; a
	// non-owner says the owner did not answer.
	servers[0].signal(syscall.SIGSTOP)
	waitFor(t, 10*time.Second, "server 1 stopped", func() bool { return stopped(servers[0].proc) })
	began := time.Now()
	resp, err := http.Get(s2 + "/api/streams/" + stream + "/tree")
	servers[0].signal(syscall.SIGCONT)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("stopped owner: %d after %v: %s", resp.StatusCode, time.Since(began).Round(time.Millisecond), strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "did not answer") {
		t.Errorf("tree while the owner is stopped: %d %s, want 503 saying the owner did not answer", resp.StatusCode, body)
	}
	waitFor(t, 30*time.Second, "the owner answering again", func() bool { return ownerAt(s3, stream) == "s1" })
}

// TestClusterJoinWaitsForNewOwner: SIGKILL the stream's owner (server 1,
// its source's server) and start a viewer on server 3 at once, during the
// election. Its hello finds no owner; server 3 knows the stream had one a
// moment ago, holds the join, and forwards it when server 2 owns the
// stream (the source's next server), or takes the stream over itself
// from its state: the viewer plays without retrying
// (`client watch` takes a first not_found as final). A stream that ended
// instead is refused at once.
func TestClusterJoinWaitsForNewOwner(t *testing.T) {
	servers := startCluster(t, 3)
	_, client := binaries(t)
	const stream = "election"
	s1, s2, s3 := servers[0].url, servers[1].url, servers[2].url
	start(t, "source", client, "broadcast", "-server", s1+","+s2, "-stream", stream, "-loopback-only")
	waitFor(t, 30*time.Second, "the source at server 1", func() bool { return ownerAt(s3, stream) == "s1" })
	// Server 1 named the stream in a heartbeat as it claimed it, before
	// the source joined; server 3 lists it from server 1's answer.
	waitFor(t, 10*time.Second, "the stream listed at server 3", func() bool {
		_, live, ok := streamListed(s3, stream)
		return ok && live
	})
	servers[0].signal(syscall.SIGKILL)
	killed := time.Now()
	viewer := start(t, "viewer", client, "watch", "-server", s3, "-stream", stream, "-frames", "60", "-json", "-timeout", "90s", "-loopback-only")
	if err := viewer.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("viewer joining during the election: %v\n%s", err, tail(viewer.output(), 2000))
	}
	if r := readReport(t, viewer); r.Frames < 60 {
		t.Errorf("viewer: %d frames, want 60", r.Frames)
	}
	// Server 3 holds the join one of two ways: with no state of the stream
	// (killed before its first delta) it waits for the election and logs
	// it; with the state (published within 5 ms of the source's join,
	// cluster/state.go) it holds the join while the stream is taken over
	// from that state, by itself or by server 2 (the source's resume).
	log := string(servers[2].output())
	owner := ownerAt(s3, stream)
	if strings.Contains(log, "join waits for the stream's new owner") {
		if !strings.Contains(log, "served=true") || owner != "s2" {
			t.Errorf("server 3 held the join for the election, owner %q (want s2); its log:\n%s", owner, tail([]byte(log), 3000))
		}
	} else {
		took := false
		for _, s := range servers[1:] {
			if strings.Contains(string(s.output()), "stream taken over") && owner == s.id {
				took = true
			}
		}
		if !took {
			t.Errorf("no election wait at server 3 and no takeover from the state by the owner %q; server 3's log:\n%s", owner, tail([]byte(log), 3000))
		}
	}
	t.Logf("viewer played %v after the owner's kill", time.Since(killed).Round(time.Millisecond))
}
